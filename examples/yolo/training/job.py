"""Start Training, wired: one background job per trainable control tag of a project.

`start_trainings` runs in the webhook request and only submits (label_studio_ml/jobs.py: an RQ job
on the training queue with `BACKGROUND_JOBS`, else a thread of the backend); it answers at once.
`run_training` runs in the job: every annotated task of the project read from Label Studio, the
tag's dataset built in a temporary folder under `MODEL_DIR`, trained from the tag's own weights,
published as the project's next version when not worse (trainer.py), then loaded (`take_over`).
Its result is the version's metrics.json; a reason not to train (`CannotTrain`, `TrainingBusy`)
fails the job with that reason.
"""

import logging
import os
import tempfile
from typing import Dict, List

from label_studio_ml import jobs
from label_studio_ml.label_studio_api import annotated_tasks
from label_studio_ml.parsing import env_int
from training.dataset import build_dataset
from training.trainer import train_version
from training.versions import TrainedVersions, Version, path_component
from utils.files import exclusive
from utils.inference import registry
from utils.runtimes import remove_exports

logger = logging.getLogger(__name__)

DEFAULT_TRAIN_QUEUE = "label-studio-ml-train"
DAY_S = 24 * 3600


def train_queue() -> str:
    """The RQ queue of trainings (`TRAIN_QUEUE`): workers on GPU machines can take only these."""
    return os.getenv("TRAIN_QUEUE", DEFAULT_TRAIN_QUEUE)


def _job_key(tag: str) -> str:
    return f"training_job:{tag}"


def start_trainings(backend, controls: List) -> Dict[str, dict]:
    """`{tag: {"job_id", "status"}}`: a training job submitted for each control model, or for a
    tag whose training is still queued or running, that job (`"status": "running"`)."""
    answers = {}
    for control in controls:
        previous = backend.get(_job_key(control.from_name))
        running = jobs.job_status(previous) if previous else None
        if jobs.is_active(running):
            answers[control.from_name] = {"job_id": previous, "status": "running",
                                          "detail": f"a training of '{control.from_name}' is already {running['status']}"}
            continue
        job_id = jobs.submit_model_method(backend, "train_tag", control.from_name,
                                          description=f"train '{control.from_name}' of project {backend.project_id}",
                                          queue_name=train_queue(), timeout=env_int("TRAIN_JOB_TIMEOUT", DAY_S))
        backend.set(_job_key(control.from_name), job_id)
        answers[control.from_name] = {"job_id": job_id, "status": "queued"}
    return answers


def _media(backend, control):
    """`task -> local image path` of the tag's object, fetched as predictions fetch it."""
    def local_path(task: dict) -> str:
        return backend.get_local_path(task["data"][control.value], task_id=task["id"])
    return local_path


def run_training(backend, control) -> dict:
    """One training of `control`'s tag for the backend's project (in a job); the new version's record."""
    jobs.report_progress({"stage": "reading annotations"})
    tasks = annotated_tasks(backend.project_id)
    if hasattr(control, "fit_tasks"):  # a tag that trains its own kind of model (TimelineLabels)
        return control.fit_tasks(tasks, backend)
    jobs.report_progress({"stage": "building dataset", "annotated_tasks": len(tasks)})
    workspace = os.path.join(_model_dir(), "training")
    os.makedirs(workspace, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dataset-", dir=workspace) as root:
        dataset = build_dataset(tasks, control.trainable_tag(), _media(backend, control), root,
                                min_tasks=control.train_min_tasks())
        jobs.report_progress({"stage": "training", **dataset.summary()})
        versions = TrainedVersions(backend.project_id, backend)
        version = train_version(dataset, control.model_path, versions, control.from_name, control.train_options(),
                                progress=jobs.report_progress)
    if version.published:
        take_over(versions, control, version)
    return version.metrics


def take_over(versions: TrainedVersions, control, version: Version) -> None:
    """After `version` of the control's tag is published: load it now if it serves, so that
    its export and engine race happen here rather than in the first request after the publish
    (that request waits for this export instead of making its own; on another machine or
    device, as a GPU worker's, it still loads it itself), and remove the exports of the tag's
    versions that no longer serve. Neither may fail the job: the version is published."""
    try:
        serving = versions.snapshot()
        now = serving.serving(control.from_name)
        if now is not None and now.number == version.number:  # not held back by a pin
            registry.get(version.weights, pytorch=control.needs_pytorch)
        for weights in serving.not_serving(control.from_name):
            remove_exports(weights)
    except Exception:
        logger.warning("Project %s, tag '%s': %s is published, but loading it or cleaning up after it failed",
                       versions.project, control.from_name, version.name, exc_info=True)


def _count_lock(project: str, tag: str) -> str:
    """The file whose lock makes one webhook at a time count annotations of the project's tag,
    among the threads and processes of this machine."""
    return os.path.join(_model_dir(), "locks", path_component(project), path_component(f"annotations-{tag}"))


def _model_dir() -> str:
    return os.path.abspath(os.getenv("MODEL_DIR", "."))


def counts_towards_training(backend, control, data: dict) -> bool:
    """An annotation webhook for a tag with `model_train_every="N"`: count it (per project and tag,
    in the store) when it has regions of the tag; True on the Nth since the last start, which
    resets the count."""
    every = control.optional_int("model_train_every")
    annotation = data.get("annotation") or {}
    if not every or annotation.get("was_cancelled"):
        return False
    if not any(region.get("from_name") == control.from_name for region in annotation.get("result") or []):
        return False
    key = f"annotations_since_training:{control.from_name}"
    with exclusive(_count_lock(backend.project_id, control.from_name)):  # webhooks arrive in parallel
        count = int(backend.get(key) or 0) + 1
        due = count >= every
        backend.set(key, "0" if due else str(count))
    if due:
        logger.info("Project %s: %d annotations of '%s' since its last training: training", backend.project_id,
                    count, control.from_name)
    return due

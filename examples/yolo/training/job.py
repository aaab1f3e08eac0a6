"""Start Training, wired: one background job per trainable control tag of a project.

`start_trainings` runs in the webhook request and only submits (label_studio_ml/jobs.py: an RQ job
on the training queue with `BACKGROUND_JOBS`, else a thread of the backend); it answers at once.
`run_training` runs in the job: every annotated task of the project read from Label Studio, the
tag's dataset built in a temporary folder under `MODEL_DIR`, trained from the tag's own weights,
published as the project's next version when not worse (trainer.py), then loaded (`take_over`).
Its result is the version's metrics.json; a reason not to train (`CannotTrain`, `TrainingBusy`)
fails the job with that reason. Everything here works from a control model and its
`ControlContext` (project, store, settings, media), never from the backend's model instance.
"""

import logging
import os
import tempfile
from typing import Callable, Dict, List

from control_models.context import ControlContext
from label_studio_ml import jobs
from label_studio_ml.label_studio_api import annotated_tasks
from training.dataset import build_dataset
from training.trainer import train_version
from training.versions import TrainedVersions, Version, path_component
from utils.files import exclusive
from utils.inference import registry
from utils.runtimes import remove_exports

logger = logging.getLogger(__name__)


def _job_key(tag: str) -> str:
    return f"training_job:{tag}"


def start_trainings(context: ControlContext, controls: List, submit: Callable[..., str]) -> Dict[str, dict]:
    """`{tag: {"job_id", "status"}}`: a training job submitted for each control model, or for a
    tag whose training is still queued or running, that job (`"status": "running"`).
    `submit(tag, description=, queue_name=, timeout=)` submits the job that trains `tag` (the
    backend's `train_tag`) and answers its id."""
    answers = {}
    for control in controls:
        previous = context.store.get(_job_key(control.from_name))
        running = jobs.job_status(context.settings, previous) if previous else None
        if jobs.is_active(running):
            answers[control.from_name] = {"job_id": previous, "status": "running",
                                          "detail": f"a training of '{control.from_name}' is already {running['status']}"}
            continue
        job_id = submit(control.from_name, description=f"train '{control.from_name}' of project {context.project_id}",
                        queue_name=context.yolo.train_queue, timeout=context.yolo.train_job_timeout)
        context.store.set(_job_key(control.from_name), job_id)
        answers[control.from_name] = {"job_id": job_id, "status": "queued"}
    return answers


def _media(control):
    """`task -> local image path` of the tag's object, fetched as predictions fetch it."""
    def local_path(task: dict) -> str:
        return control.context.local_path(task["data"][control.value], task_id=task["id"])
    return local_path


def run_training(control) -> dict:
    """One training of `control`'s tag for its context's project (in a job); the new version's record."""
    context: ControlContext = control.context
    jobs.report_progress({"stage": "reading annotations"})
    tasks = annotated_tasks(context.settings, context.project_id)
    if control.learns_from_annotations:  # a tag that trains its own kind of model in place (TimelineLabels)
        return control.fit_tasks(tasks)
    jobs.report_progress({"stage": "building dataset", "annotated_tasks": len(tasks)})
    workspace = os.path.join(context.settings.model_dir, "training")
    os.makedirs(workspace, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dataset-", dir=workspace) as root:
        dataset = build_dataset(tasks, control.trainable_tag(), _media(control), root,
                                min_tasks=control.train_min_tasks())
        jobs.report_progress({"stage": "training", **dataset.summary()})
        versions = TrainedVersions(context.project_id, context.store, context.yolo.model_root)
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
            registry.get(version.weights, control.context.inference, pytorch=control.needs_pytorch)
        for weights in serving.not_serving(control.from_name):
            remove_exports(weights, control.context.inference.exports_dir)
    except Exception:
        logger.warning("Project %s, tag '%s': %s is published, but loading it or cleaning up after it failed",
                       versions.project, control.from_name, version.name, exc_info=True)


def _count_lock(model_dir: str, project: str, tag: str) -> str:
    """The file whose lock makes one webhook at a time count annotations of the project's tag,
    among the threads and processes of this machine."""
    return os.path.join(model_dir, "locks", path_component(project), path_component(f"annotations-{tag}"))


def counts_towards_training(control, data: dict) -> bool:
    """An annotation webhook for a tag with `model_train_every="N"`: count it (per project and tag,
    in the store) when it has regions of the tag; True on the Nth since the last start, which
    resets the count."""
    every = control.optional_int("model_train_every")
    annotation = data.get("annotation") or {}
    if not every or annotation.get("was_cancelled"):
        return False
    if not any(region.get("from_name") == control.from_name for region in annotation.get("result") or []):
        return False
    context: ControlContext = control.context
    key = f"annotations_since_training:{control.from_name}"
    with exclusive(_count_lock(context.settings.model_dir, context.project_id, control.from_name)):  # in parallel
        count = int(context.store.get(key) or 0) + 1
        due = count >= every
        context.store.set(key, "0" if due else str(count))
    if due:
        logger.info("Project %s: %d annotations of '%s' since its last training: training", context.project_id,
                    count, control.from_name)
    return due

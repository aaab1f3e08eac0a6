"""One training run: an Ultralytics dataset + starting weights -> a new trained version.

The run trains in a staging folder of the tag (`TrainedVersions.staging`), evaluates the new
weights and the serving ones on the same validation split, and publishes the new version only
when it is not worse (`keep_worse` publishes anyway; a rejected run is kept, numbered, not
served). Runs of one (project, tag) never overlap, across threads and processes: a second one
fails at once with `TrainingBusy` instead of waiting for hours.

Ultralytics writes only below the staging folder (`project=`), makes no plots (they would fetch
fonts) and no AMP check (it would fetch weights): it trains offline.
"""

import gc
import logging
import os
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import Callable, Dict, Mapping, Optional, Tuple

from training.dataset import CannotTrain, Dataset
from training.versions import WEIGHTS_FILE, TrainedVersions, Version
from utils.files import exclusive_if_free
from utils.inference import select_device
from utils.settings import YoloSettings

logger = logging.getLogger(__name__)

Progress = Callable[[dict], None]

# Ultralytics' name of each task's headline metrics (box, mask or pose mAP).
MAP_SUFFIX = {"detect": "B", "obb": "B", "segment": "M", "pose": "P"}
# Ultralytics trainings sharing a process spoil each other (trainer state is process-wide): the
# runs of one process (thread jobs of several tags or projects) take turns. RQ workers are
# processes of their own and train side by side.
_ONE_TRAINING_PER_PROCESS = threading.Lock()


class TrainingBusy(CannotTrain):
    """A training of the same project and tag is running."""


@dataclass(frozen=True)
class TrainOptions:
    """Options of one run. `imgsz` None: the size the starting weights were trained at. `device`
    None: CUDA when available, else CPU. `overrides`: further Ultralytics `train` arguments
    (e.g. `lr0`)."""

    epochs: int = 50
    imgsz: Optional[int] = None
    batch: int = 16
    patience: int = 20
    workers: int = 2
    device: Optional[str] = None
    keep_worse: bool = False
    overrides: Mapping = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: YoloSettings, **given) -> "TrainOptions":
        """Defaults from the settings (`TRAIN_EPOCHS`, `TRAIN_IMGSZ`, `TRAIN_BATCH`,
        `TRAIN_PATIENCE`, `TRAIN_WORKERS`, the device as for prediction), then the `given` values
        that are not None (a tag's attributes)."""
        options = cls(epochs=settings.train_epochs, imgsz=settings.train_imgsz or None, batch=settings.train_batch,
                      patience=settings.train_patience, workers=settings.train_workers,
                      device=settings.device or None)
        return replace(options, **{k: v for k, v in given.items() if v is not None})


def headline_metrics(results, task: str) -> Dict[str, float]:
    """The figures a version is judged by: `top1`/`top5` (classify), else `mAP50` and `mAP50-95`
    of the task's own output (boxes, masks or keypoints)."""
    if task == "classify":
        return {"top1": float(results.top1), "top5": float(results.top5)}
    figures = results.results_dict
    suffix = MAP_SUFFIX[task]
    return {"mAP50": float(figures[f"metrics/mAP50({suffix})"]),
            "mAP50-95": float(figures[f"metrics/mAP50-95({suffix})"])}


def primary_metric(task: str) -> str:
    return "top1" if task == "classify" else "mAP50-95"


def publish_decision(metric: str, new: float, serving: Optional[float], keep_worse: bool) -> Tuple[bool, str]:
    """(publish?, why): not worse than the serving weights on the same split, or kept anyway."""
    if serving is None:
        return True, "published: no serving weights with these classes to compare with"
    if new >= serving:
        return True, f"published: {metric} {new:.4f} >= {serving:.4f} of the serving weights"
    if keep_worse:
        return True, f"published although {metric} {new:.4f} < {serving:.4f} of the serving weights (model_train_keep_worse)"
    return False, f"rejected: {metric} {new:.4f} < {serving:.4f} of the serving weights; kept, not served"


class _Run:
    """Ultralytics calls of one run, writing below `workdir`."""

    def __init__(self, dataset: Dataset, options: TrainOptions, workdir: str, progress: Optional[Progress]):
        self.dataset, self.options, self.workdir, self.progress = dataset, options, workdir, progress
        self.device = select_device(options.device or "")

    def report(self, update: dict) -> None:
        if self.progress is None:
            return
        try:
            self.progress(update)
        except Exception:  # reporting must never stop a training
            logger.warning("Training progress could not be reported", exc_info=True)

    def common_args(self, imgsz: int) -> dict:
        return {"data": self.dataset.data, "imgsz": imgsz, "batch": self.options.batch, "device": self.device,
                "workers": self.options.workers, "plots": False, "verbose": False, "project": self.workdir}

    def train(self, starting_weights: str) -> Tuple[str, int, int]:
        """(path of the best weights, epochs run, image size) of a training from `starting_weights`."""
        from ultralytics import YOLO

        model = YOLO(starting_weights)
        imgsz = self.options.imgsz or int((model.ckpt or {}).get("train_args", {}).get("imgsz") or 640)
        epochs_run = 0

        def on_epoch_end(trainer):
            nonlocal epochs_run
            epochs_run = min(trainer.epoch + 1, trainer.epochs)  # the final validation reports once more
            self.report({"stage": "training", "epoch": epochs_run, "epochs": trainer.epochs,
                         "metrics": {k: round(float(v), 5) for k, v in (trainer.metrics or {}).items()}})

        model.add_callback("on_fit_epoch_end", on_epoch_end)
        model.train(**self.common_args(imgsz), epochs=self.options.epochs, patience=self.options.patience,
                    amp=False, name="train", exist_ok=True, **dict(self.options.overrides))
        best = model.trainer.best if os.path.isfile(model.trainer.best) else model.trainer.last
        return str(best), epochs_run, imgsz

    def same_classes(self, weights: str) -> bool:
        """Whether `weights` predict the dataset's classes (else their metrics mean nothing here)."""
        from ultralytics import YOLO

        model = YOLO(weights)
        return model.task == self.dataset.task and tuple(model.names.values()) == self.dataset.names

    def evaluate(self, weights: str, imgsz: int, name: str) -> Dict[str, float]:
        """Headline metrics of `weights` on the validation split."""
        from ultralytics import YOLO

        results = YOLO(weights).val(**self.common_args(imgsz), split="val", name=name, exist_ok=True)
        return headline_metrics(results, self.dataset.task)


def _release_device_memory() -> None:
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def train_version(dataset: Dataset, starting_weights: str, versions: TrainedVersions, tag: str,
                  options: Optional[TrainOptions] = None, progress: Optional[Progress] = None) -> Version:
    """Train `tag` of `versions.project` on `dataset` from `starting_weights`; the new version
    (published or, when worse than the serving weights, kept only). `progress` receives
    `{"stage", "epoch", "epochs", "metrics"}` updates. Raises `TrainingBusy` when a run of this
    tag is under way."""
    import ultralytics

    options = options or TrainOptions()
    with exclusive_if_free(versions.tag_dir(tag)) as free:
        if not free:
            raise TrainingBusy(f"a training of '{tag}' for project {versions.project} is already running")
        versions.remove_stale_staging(tag)
        started = time.monotonic()
        with versions.staging(tag) as staging:
            run = _Run(dataset, options, staging, progress)
            if not _ONE_TRAINING_PER_PROCESS.acquire(blocking=False):
                run.report({"stage": "waiting", "reason": "another training of this process runs first"})
                _ONE_TRAINING_PER_PROCESS.acquire()
            try:
                best, epochs_run, imgsz = run.train(starting_weights)
                run.report({"stage": "evaluating"})
                metrics = run.evaluate(best, imgsz, "val-new")
                serving = versions.serving(tag)
                baseline_weights = serving.weights if serving else starting_weights
                baseline = run.evaluate(baseline_weights, imgsz, "val-serving") \
                    if run.same_classes(baseline_weights) else None
            finally:
                _ONE_TRAINING_PER_PROCESS.release()
                _release_device_memory()
            shutil.copyfile(best, os.path.join(staging, WEIGHTS_FILE))
            shutil.rmtree(os.path.join(staging, "train", "weights"), ignore_errors=True)  # best.pt is copied
            metric = primary_metric(dataset.task)
            serve, decision = publish_decision(metric, metrics[metric], baseline[metric] if baseline else None,
                                               options.keep_worse)
            compared_with = None
            if baseline is not None:
                compared_with = serving.name if serving else os.path.basename(starting_weights)
            record = {
                "task": dataset.task, "classes": list(dataset.names), "metric": metric, "metrics": metrics,
                "serving_metrics": baseline, "compared_with": compared_with, "decision": decision,
                **dataset.summary(), "epochs_run": epochs_run, "imgsz": imgsz,
                "options": {**asdict(options), "overrides": dict(options.overrides)},
                "duration_s": round(time.monotonic() - started, 1),
                "starting_weights": os.path.basename(starting_weights),
                "ultralytics_version": ultralytics.__version__,
                "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            version = versions.publish(tag, staging, record, serve=serve)
    logger.info("Project %s, tag '%s': %s %s", versions.project, tag, version.name, decision)
    run.report({"stage": "finished", "version": version.name, "published": serve, "decision": decision})
    return version

"""The YOLO backend: every servable control tag of the labeling config, predicted with Ultralytics.

Per request: the config is turned into control models (cheap); each task's media is fetched and
decoded once; each control model runs its weights over all the request's images in batches; a
task whose media is missing or broken gets its own error and the rest of the batch its predictions.
"""

import logging
import os
from typing import Dict, List, Optional

from control_models import control_models_for
from label_studio_ml.exceptions import BadRequest, LabelConfigError, MLBackendError
from label_studio_ml.model import LabelStudioMLBase
from label_studio_ml.response import task_error
from label_studio_ml.utils import env_int
from utils.images import load_image
from utils.video import VideoFrames
from utils.models import model_root, registry

logger = logging.getLogger(__name__)


class TaskMedia:
    """Media of the request's tasks, fetched and decoded at most once per (task, data key)."""

    def __init__(self, backend: LabelStudioMLBase, tasks: List[dict]):
        self.backend = backend
        self.tasks = tasks
        self._images: Dict[tuple, object] = {}

    def url(self, index: int, key: str) -> str:
        data = self.tasks[index]["data"]
        if key not in data:
            raise BadRequest(f"task data has no '{key}' (keys: {', '.join(map(str, data)) or 'none'})")
        value = data[key]
        if not isinstance(value, str):
            raise BadRequest(f"task data '{key}' must be a URL or path string, not {type(value).__name__}")
        return value

    def local_path(self, index: int, key: str) -> str:
        return self.backend.get_local_path(self.url(index, key), task_id=self.tasks[index].get("id"))

    def image(self, index: int, key: str):
        cache_key = (index, key)
        if cache_key not in self._images:
            try:
                self._images[cache_key] = load_image(self.local_path(index, key))
            except MLBackendError as exc:
                self._images[cache_key] = exc
        cached = self._images[cache_key]
        if isinstance(cached, MLBackendError):
            raise cached
        return cached


class YOLO(LabelStudioMLBase):
    """Label Studio ML backend serving Ultralytics YOLO models for every image control tag."""

    def setup(self):
        self.set("model_version", os.getenv("MODEL_VERSION", "yolo"))
        self._video_keys = None

    @classmethod
    def backend_status(cls) -> dict:
        return {"model_root": model_root(), "device": os.getenv("DEVICE") or "auto", "loaded_models": registry.loaded()}

    def runs_in_background(self, task: dict) -> bool:
        """With `BACKGROUND_JOBS` on: a task whose video has more than `BACKGROUND_MIN_FRAMES`
        frames (default 1800, a minute at 30 fps) is predicted by an RQ worker, not in the request."""
        if self._video_keys is None:  # asked once per task: look at the config once per request
            self._video_keys = {c.value for c in control_models_for(self.label_interface, strict=False)
                                if c.annotates_video}
        limit = env_int("BACKGROUND_MIN_FRAMES", 1800)
        for key in self._video_keys:
            try:
                with VideoFrames(TaskMedia(self, [task]).local_path(0, key)) as video:
                    if video.header_frames > limit:
                        return True
            except MLBackendError:
                continue  # predicted in the request, where the error is reported for this task
        return False

    def predict(self, tasks: List[dict], context: Optional[dict] = None, **kwargs) -> List[dict]:
        controls = control_models_for(self.label_interface)
        version = str(self.model_version)
        media = TaskMedia(self, tasks)
        regions: List[list] = [[] for _ in tasks]
        errors: List[Optional[str]] = [None] * len(tasks)

        for control in controls:
            if not control.is_usable():
                continue
            if control.annotates_video:
                self._predict_videos(control, media, regions, errors)
                continue
            indices, images = [], []
            for i in range(len(tasks)):
                if errors[i] is not None:
                    continue
                try:
                    images.append(media.image(i, control.value))
                    indices.append(i)
                except MLBackendError as exc:
                    errors[i] = exc.detail
            for i, found in zip(indices, self._predict_isolated(control, images, indices, errors)):
                if found is not None:
                    regions[i].extend(found)

        predictions = []
        for task, task_regions, error in zip(tasks, regions, errors):
            if error is not None:
                logger.warning("Task %s: %s", task.get("id"), error)
                predictions.append(task_error(version, error))
                continue
            scores = [r["score"] for r in task_regions if "score" in r]
            predictions.append({"result": task_regions, "score": sum(scores) / len(scores) if scores else 0.0,
                                "model_version": version})
        return predictions

    @staticmethod
    def _predict_videos(control, media: TaskMedia, regions: List[list], errors: List[Optional[str]]) -> None:
        """Videos are long: one task at a time (frames are streamed), each failing on its own."""
        for i, task in enumerate(media.tasks):
            if errors[i] is not None:
                continue
            try:
                regions[i].extend(control.predict_video(media.local_path(i, control.value), task, backend=media.backend))
            except LabelConfigError:
                raise
            except MLBackendError as exc:
                errors[i] = exc.detail
            except Exception as exc:
                logger.error("%r failed on task %s: %s", control, task.get("id"), exc, exc_info=logger.isEnabledFor(logging.DEBUG))
                errors[i] = f"{control!r} failed: {type(exc).__name__}: {exc}"

    def fit(self, event: str, data: dict, **kwargs) -> dict:
        """Webhook events go to the control models that learn (e.g. trainable TimelineLabels)."""
        if self.label_interface is None:
            return {"status": "skipped", "reason": "no labeling config"}
        trained = {}
        for control in control_models_for(self.label_interface, strict=False):
            if hasattr(control, "fit"):
                trained[control.from_name] = control.fit(event, data, self)
        return {"status": "ok", "trained": trained} if trained else {"status": "skipped", "reason": "no trainable control tag"}

    @staticmethod
    def _predict_isolated(control, images, indices, errors) -> list:
        """Regions per image; if the batched call fails, retry image by image so one bad image
        fails only its own task. Config-level errors (400) fail the request."""
        if not images:
            return []
        try:
            return control.predict_images(images)
        except LabelConfigError:
            raise
        except Exception as exc:
            if len(images) == 1:
                errors[indices[0]] = f"{control!r} failed: {type(exc).__name__}: {exc}"
                return [None]
            logger.warning("%r failed on a batch of %d images (%s); retrying one by one", control, len(images), exc)
        out = []
        for i, image in zip(indices, images):
            try:
                out.append(control.predict_images([image])[0])
            except LabelConfigError:
                raise
            except Exception as exc:
                errors[i] = f"{control!r} failed: {type(exc).__name__}: {exc}"
                out.append(None)
        return out

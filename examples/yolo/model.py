"""The YOLO backend: every servable control tag of the labeling config, predicted with Ultralytics.

Per request: the config is turned into control models (cheap), each given the request's
`ControlContext` (project, store, settings, media access: control models never see this
instance); the tasks are predicted in batches of `YOLO_BATCH_SIZE`: each batch's images are
fetched and decoded (once per file, several files at a time: utils/task_media.py), every
control model runs its weights over them, and they are released before the next batch. A task
whose media is missing or broken gets its own error and the rest of the batch its predictions.

Settings: the SDK's (`self.settings`, with the YOLO default `MODEL_DIR`, see `default_settings`)
and the YOLO backend's own (`self.yolo_settings`: the `yolo_settings` keyword argument, e.g.
`init_app(YOLO, model_kwargs={"yolo_settings": ...})`, else read from the environment once).
"""

import functools
import logging
from typing import Iterable, List, Optional

from control_models import control_models_for
from control_models.context import ControlContext
from interactive.cache import load_image_once
from label_studio_ml import jobs
from label_studio_ml.exceptions import LabelConfigError, MLBackendError
from label_studio_ml.isolation import TaskFailed, call_isolated, run_isolated
from label_studio_ml.model import LabelStudioMLBase
from label_studio_ml.response import task_error
from label_studio_ml.settings import Settings
from training.dataset import CannotTrain
from training.job import counts_towards_training, run_training, start_trainings
from training.versions import ServingState, TrainedVersions
from utils.inference import registry
from utils.prompts import Prompts, read_prompts
from utils.settings import YoloSettings, default_backend_settings, default_yolo_settings
from utils.task_media import TaskMedia
from utils.ultralytics_env import prepare_ultralytics
from utils.video import VideoFrames

logger = logging.getLogger(__name__)


class YOLO(LabelStudioMLBase):
    """Label Studio ML backend serving Ultralytics YOLO models for every image control tag."""

    TRAINS_IN_BACKGROUND = True  # fit only submits training jobs (training/job.py)

    @classmethod
    def default_settings(cls) -> Settings:
        """The SDK settings from the environment, with `examples/yolo/data/server` as the default
        `MODEL_DIR` (utils/settings.py)."""
        return default_backend_settings()

    def setup(self):
        self.yolo_settings: YoloSettings = self.kwargs.get("yolo_settings") or default_yolo_settings()
        prepare_ultralytics(self.settings)  # before anything of this instance imports Ultralytics
        self._video_keys = None
        self._serving: Optional[ServingState] = None

    @functools.cached_property
    def context(self) -> ControlContext:
        """What this instance's control models may use (one request, webhook or job)."""
        return ControlContext(project_id=self.project_id, settings=self.settings, yolo=self.yolo_settings,
                              store=self.project_store, local_path=self.get_local_path)

    def control_models(self, strict: bool = True, serving: Optional[ServingState] = None):
        """The control models of this instance's labeling config (`control_models_for`)."""
        return control_models_for(self.label_interface, self.context, strict=strict, serving=serving)

    # ----- versions: the tags' own weights (`MODEL_VERSION`, default "yolo"), then trained ones ----
    @property
    def trained_versions(self) -> TrainedVersions:
        return TrainedVersions(self.project_id, self.context.store, self.yolo_settings.model_root)

    @property
    def serving(self) -> ServingState:
        """What serves the project, read once for this instance (one request): its predictions'
        weights and their `model_version` (which the server reads before predicting) come from
        this one reading, even when a training publishes or a pin changes meanwhile."""
        if self._serving is None:
            self._serving = self.trained_versions.snapshot()
        return self._serving

    @property
    def model_version(self) -> str:
        """`yolo`, or `yolo-v<N>` once the project's trained version N serves: a new version makes
        Label Studio's Retrieve Predictions predict again the tasks it had predicted."""
        return self.serving.project_version(self.yolo_settings.model_version)

    def available_versions(self) -> List[str]:
        return self.trained_versions.version_names(self.yolo_settings.model_version)

    def set_extra_params(self, extra_params) -> None:
        """Connect Model's extra params, sent with every /setup. `{"model_version": "yolo-v2"}` pins
        that version (rollback); without it (`""`, other params only, or the field cleared) the
        newest published version serves. A version that is not published is logged and ignored:
        /setup never fails for it."""
        super().set_extra_params(extra_params)
        wanted = extra_params.get("model_version") if isinstance(extra_params, dict) else None
        try:
            self.trained_versions.pin(wanted, self.yolo_settings.model_version)
        except ValueError as exc:
            logger.warning("Project %s: %s; the pin is left as it was", self.project_id, exc)
        self._serving = None  # /setup answers the version the pin serves

    @classmethod
    def backend_status(cls, settings: Settings, yolo_settings: Optional[YoloSettings] = None, **_) -> dict:
        """Of the server's settings (`/health` asks the class, not an instance)."""
        yolo = yolo_settings or default_yolo_settings()
        return {"model_root": yolo.model_root, "device": yolo.device or "auto", "loaded_models": registry.loaded()}

    def runs_in_background(self, task: dict) -> bool:
        """With `BACKGROUND_JOBS` on: a task whose video has more than `BACKGROUND_MIN_FRAMES`
        frames (default 1800, a minute at 30 fps) is predicted by an RQ worker, not in the request."""
        if self._video_keys is None:  # asked once per task: look at the config once per request
            self._video_keys = {c.value for c in self.control_models(strict=False) if c.annotates_video}
        limit = self.yolo_settings.background_min_frames
        for key in self._video_keys:
            try:
                with VideoFrames(TaskMedia(self.context, [task]).local_path(0, key)) as video:
                    if video.header_frames > limit:
                        return True
            except MLBackendError:
                continue  # predicted in the request, where the error is reported for this task
        return False

    def predict(self, tasks: List[dict], context: Optional[dict] = None, **kwargs) -> List[dict]:
        prompts = read_prompts(context)
        if prompts:
            return self._predict_prompted(tasks, prompts)
        controls = [control for control in self.control_models(serving=self.serving)
                    if not control.prompt_only and control.is_usable()]
        version = str(self.model_version)
        image_keys = {control.value for control in controls if not control.annotates_video}
        regions: List[list] = [[] for _ in tasks]
        errors: List[Optional[str]] = [None] * len(tasks)

        # Batch by batch, so a request of many tasks holds one batch of decoded images at a time.
        size = self.yolo_settings.yolo_batch_size
        with TaskMedia(self.context, tasks) as media:
            for start in range(0, len(tasks), size):
                batch = range(start, min(start + size, len(tasks)))
                media.load_batch(batch, image_keys)
                for control in controls:
                    if control.annotates_video:
                        self._predict_videos(control, media, batch, regions, errors)
                    else:
                        self._predict_images(control, media, batch, regions, errors)

        return [self._prediction(version, task_regions, error) for task_regions, error in zip(regions, errors)]

    def _predict_prompted(self, tasks: List[dict], prompts: List[Prompts]) -> List[dict]:
        """Smart tools: the answer holds only the object the annotator's clicks and boxes point at,
        as regions of every `BrushLabels`/`PolygonLabels` of the prompted image."""
        outputs = [(control, prompt) for control in self.control_models(serving=self.serving)
                   if control.answers_smart_tools for prompt in prompts if prompt.to_name == control.to_name]
        if not outputs:
            raise LabelConfigError(
                f"Smart-tool prompts on {', '.join(sorted({p.to_name for p in prompts}))} need a <BrushLabels> or "
                f"<PolygonLabels> on the same image for the answer")
        version = str(self.model_version)
        media = TaskMedia(self.context, tasks)
        yolo = self.yolo_settings

        def segment(index: int) -> List[dict]:
            return [region for control, prompt in outputs
                    for region in control.segment_prompted(
                        load_image_once(media.local_path(index, control.value), yolo.max_image_pixels,
                                        yolo.interactive_cache_images), prompt)]

        predictions = []
        for i in range(len(tasks)):
            outcome = call_isolated(segment, i, _task_name(media, i))
            failed = isinstance(outcome, TaskFailed)
            predictions.append(self._prediction(version, [] if failed else outcome, outcome.detail if failed else None))
        return predictions

    @staticmethod
    def _predict_images(control, media: TaskMedia, batch: Iterable[int], regions: List[list],
                        errors: List[Optional[str]]) -> None:
        """One model call over the batch's images; a task whose image cannot be had, or that the
        model fails on by itself, fails alone (label_studio_ml/isolation.py)."""
        loaded = []
        for i in batch:
            if errors[i] is None:
                image = call_isolated(lambda index: media.image(index, control.value), i, _task_name(media, i))
                if isinstance(image, TaskFailed):
                    errors[i] = image.detail
                else:
                    loaded.append((i, image))
        if not loaded:
            return
        outcomes = run_isolated(lambda pairs: control.predict_images([image for _, image in pairs]), loaded,
                                what=lambda pair: f"{control!r} on {_task_name(media, pair[0])}")
        for (i, _), outcome in zip(loaded, outcomes):
            if isinstance(outcome, TaskFailed):
                errors[i] = f"{control!r} failed: {outcome.detail}"
            else:
                regions[i].extend(outcome)

    @staticmethod
    def _predict_videos(control, media: TaskMedia, batch: Iterable[int], regions: List[list],
                        errors: List[Optional[str]]) -> None:
        """Videos are long: one task at a time (frames are streamed), each failing on its own."""
        for i in batch:
            if errors[i] is not None:
                continue
            outcome = call_isolated(
                lambda index: control.predict_video(media.local_path(index, control.value), media.tasks[index]),
                i, f"{control!r} on {_task_name(media, i)}")
            if isinstance(outcome, TaskFailed):
                errors[i] = outcome.detail
            else:
                regions[i].extend(outcome)

    def fit(self, event: str, data: dict, **kwargs) -> dict:
        """`START_TRAINING` submits a training job per trainable tag and answers their ids at once
        (`job_id` and `status` too when there is one). Annotation events train TimelineLabels
        classifiers, and start a tag's training every `model_train_every` annotations."""
        if self.label_interface is None:
            return {"status": "skipped", "reason": "no labeling config"}
        controls = self.control_models(strict=False)
        trainable = [control for control in controls if control.wants_training()]
        if event == "START_TRAINING":
            due, trained = trainable, {}
        else:
            due = [control for control in trainable if counts_towards_training(control, data)]
            trained = {control.from_name: control.fit(event, data) for control in controls
                       if control.learns_from_annotations}
        started = start_trainings(self.context, due, functools.partial(jobs.submit_model_method, self, "train_tag"))
        if not trained and not started:
            return {"status": "skipped", "reason": "no trainable control tag" if not trainable else "no training due"}
        answer = {"status": "ok"}
        if trained:
            answer["trained"] = trained
        if started:
            answer["jobs"] = started
            if len(started) == 1:
                answer.update(next(iter(started.values())))
        return answer

    def train_tag(self, from_name: str) -> dict:
        """One training of the tag `from_name` (called in its background job, training/job.py)."""
        for control in self.control_models(strict=False):
            if control.from_name == from_name and control.wants_training():
                return run_training(control)
        raise CannotTrain(f"the labeling config has no trainable control tag '{from_name}' (model_trainable=\"true\")")

    def _prediction(self, version: str, regions: List[dict], error: Optional[str]) -> dict:
        """One task's prediction: its regions and their score (`prediction_score`), or its error
        (logged where it happened, label_studio_ml/isolation.py)."""
        if error is not None:
            return task_error(version, error)
        scores = [r["score"] for r in regions if "score" in r]
        return {"result": regions, "score": prediction_score(scores, self.yolo_settings.prediction_score),
                "model_version": version}


SCORE_AGGREGATES = {"mean": lambda scores: sum(scores) / len(scores), "min": min, "max": max}


def prediction_score(scores: List[float], aggregate: str) -> float:
    """The task's score, which Label Studio sorts tasks by: by `aggregate` (`PREDICTION_SCORE`),
    the `mean` of its regions' scores, the `min` (a task's least certain region decides: sorted
    ascending, the tasks the model is least sure of come first, for active learning) or the
    `max`; 0 without regions."""
    return float(SCORE_AGGREGATES[aggregate](scores)) if scores else 0.0


def _task_name(media: TaskMedia, index: int) -> str:
    return f"task {media.tasks[index].get('id')}"

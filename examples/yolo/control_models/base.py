"""What every control model shares: reading its control tag's attributes, its weights, its labels.

A control model serves one control tag (e.g. `<RectangleLabels name="label" toName="image">`) of a
labeling config. It is built per request from the config and the request's `ControlContext`
(cheap: no weights touched), then asked for regions for a batch of images (or one video). Weights
come from the process-wide registry.

What a control model can do besides predicting images is declared by class attributes, which the
backend reads instead of probing for methods: `learns_from_annotations` (`fit`, `fit_tasks`) and
`answers_smart_tools` (`segment_prompted`).
"""

import logging
import os
from typing import Callable, Dict, List, Optional

import numpy as np

from control_models.context import ControlContext
from label_studio_ml.exceptions import LabelConfigError
from label_studio_ml.label_config import build_label_map
from label_studio_ml.parsing import parse_bool
from utils import debug_plots
from training.dataset import DEFAULT_MIN_TASKS, TrainableTag
from training.trainer import TrainOptions
from training.versions import ServingState
from utils.detections import Detections, Target
from utils.inference import LoadedModel, registry
from utils.prompts import Prompts
from utils.weights import resolve_model_path

logger = logging.getLogger(__name__)


def tag_bool(control, name: str, default: bool) -> bool:
    """The control tag's attribute `name` as a bool (`true`/`false`, `1`/`0`, ...); a 400 naming
    the tag for anything else."""
    value = control.attr.get(name)
    try:
        return parse_bool(value, default)
    except ValueError:
        raise LabelConfigError(f"<{control.tag} name=\"{control.name}\">: {name}={value!r} is not true/false") from None


class ControlModel:
    """Base class; subclasses set the class attributes and a `converter` (images; or override
    `regions_from`) or implement `predict_video`."""

    control_type: str = ""              # Label Studio control tag, e.g. "RectangleLabels"
    object_types = ("Image",)           # object tags it can annotate
    ultralytics_tasks = ("detect",)     # model tasks whose output it understands
    default_model = "yolov8m.pt"
    needs_pytorch = False               # True when it reaches into the PyTorch network itself
    converter: Optional[Callable[[Detections, Target], List[dict]]] = None  # see utils.converters
    # True: it learns in place from each submitted annotation (`fit`) and, with Start Training,
    # from every annotated task (`fit_tasks`), instead of training new versions of its weights.
    learns_from_annotations = False
    # True: it answers Label Studio's smart tools with the clicked object (`segment_prompted`).
    answers_smart_tools = False

    def __init__(self, control, object_tag, label_interface, context: ControlContext):
        self.control = control
        self.label_interface = label_interface
        self.context = context
        self.from_name = control.name
        self.to_name = object_tag.name
        self.object_type = object_tag.tag
        self.value = object_tag.value_name  # the task data key holding the media URL
        self.model_path = resolve_model_path(self._model_name(), context.yolo.model_root)
        self.score_threshold = self.float_attr(("model_score_threshold", "score_threshold"),
                                               context.yolo.model_score_threshold)
        self.serves_trained = False  # True once `serve_trained` chose a trained version
        self._model: Optional[LoadedModel] = None
        self._label_map: Optional[Dict[str, str]] = None

    @property
    def annotates_video(self) -> bool:
        return self.object_type == "Video"

    # ----- matching -----------------------------------------------------------------------------
    @classmethod
    def matches(cls, control, object_tag) -> bool:
        return control.tag == cls.control_type and object_tag.tag in cls.object_types

    # ----- attributes ---------------------------------------------------------------------------
    def attr(self, name, default=None):
        return self.control.attr.get(name, default)

    def float_attr(self, names, default: float) -> float:
        names = (names,) if isinstance(names, str) else names
        for name in names:
            value = self.attr(name)
            if value is not None:
                try:
                    return float(value)
                except ValueError:
                    raise LabelConfigError(f"<{self.control_type} name=\"{self.from_name}\">: {name}={value!r} is not a number")
        return float(default)

    def int_attr(self, name: str, default: int) -> int:
        value = self.float_attr(name, default)
        if value != int(value):
            raise LabelConfigError(f"<{self.control_type} name=\"{self.from_name}\">: {name} must be an integer")
        return int(value)

    def bool_attr(self, name: str, default: bool) -> bool:
        return tag_bool(self.control, name, default)

    def _model_name(self) -> str:
        custom = self.attr("model_path")
        if custom and self.context.yolo.allow_custom_model_path:
            return custom
        return self.default_model

    def optional_int(self, name: str) -> Optional[int]:
        return None if self.attr(name) is None else self.int_attr(name, 0)

    # ----- training -----------------------------------------------------------------------------
    def wants_training(self) -> bool:
        """`model_trainable="true"` on an image tag: Start Training fine-tunes its weights on the
        project's annotations (training/), and the project's trained version then serves it."""
        return not self.annotates_video and self.bool_attr("model_trainable", False)

    def serve_trained(self, serving: ServingState) -> None:
        """Serve the project's trained version of this tag (`serving`: the request's snapshot),
        when it is trainable and has one (`model_path` stays the starting weights of the next
        training); `serves_trained` says whether it does. The tag's versions that no longer serve
        are released from memory (this is where a process sees a publish or a pin first)."""
        if not self.wants_training():
            return
        registry.release(serving.not_serving(self.from_name))
        version = serving.serving(self.from_name)
        if version is not None:
            self.model_path = version.weights
            self.serves_trained = True

    def trainable_tag(self) -> TrainableTag:
        """What a training learns: the task of the tag's model, the tag's own labels in config order."""
        return TrainableTag(self.from_name, self.ultralytics_tasks[0], tuple(self.control.labels or ()))

    def train_options(self) -> TrainOptions:
        """`model_epochs`, `model_imgsz`, `model_batch`, `model_patience`, `model_train_keep_worse`
        of the tag, else the `TRAIN_*` settings."""
        return TrainOptions.from_settings(
            self.context.yolo, epochs=self.optional_int("model_epochs"), imgsz=self.optional_int("model_imgsz"),
            batch=self.optional_int("model_batch"), patience=self.optional_int("model_patience"),
            keep_worse=self.bool_attr("model_train_keep_worse", False))

    def train_min_tasks(self) -> int:
        return self.int_attr("model_train_min_tasks", DEFAULT_MIN_TASKS)

    # ----- model and labels ---------------------------------------------------------------------
    @property
    def model(self) -> LoadedModel:
        if self._model is None:
            model = registry.get(self.model_path, self.context.inference, pytorch=self.needs_pytorch)
            if model.task not in self.ultralytics_tasks:
                raise LabelConfigError(
                    f"<{self.control_type} name=\"{self.from_name}\"> needs a {'/'.join(self.ultralytics_tasks)} "
                    f"model, but {model.name} is a {model.task} model"
                )
            self._model = model
        return self._model

    @property
    def label_map(self) -> Dict[str, str]:
        if self._label_map is None:
            self._label_map = build_label_map(self.label_interface, self.from_name, self.model.names.values())
        return self._label_map

    def is_usable(self) -> bool:
        """False when no label maps to a model class (logged): the tag is skipped, not failed."""
        return bool(self.label_map)

    @property
    def prompt_only(self) -> bool:
        """A smart tool's tag (`smart`/`smartOnly`) without its own `model_path`: where the annotator
        draws prompts for interactive segmentation, not a tag to predict in batch mode."""
        smart = self.bool_attr("smart", False) or self.bool_attr("smartOnly", False)
        return smart and not self.attr("model_path")

    # ----- prediction ---------------------------------------------------------------------------
    def predict_images(self, images: List[np.ndarray]) -> List[List[dict]]:
        """Regions for each image (BGR arrays as Label Studio shows them), one batched model call."""
        results = self.model.predict(images, self.context.inference.batch_size, **self.predict_options())
        if self.context.yolo.debug_plot:
            directory = debug_plots.plots_dir(self.context.settings.model_dir)
            for result in results:
                debug_plots.save_debug_plot(result, self.from_name, directory, keep=self.context.yolo.debug_plot_keep)
        return [self.regions_from(self.detections(result), self.target(image.shape[1], image.shape[0]))
                for image, result in zip(images, results)]

    def target(self, width: int, height: int) -> Target:
        return Target(self.from_name, self.to_name, width, height)

    def predict_options(self) -> dict:
        """Ultralytics `predict` options: our threshold as `conf`, so low thresholds really return low boxes."""
        return {"conf": min(self.score_threshold, 0.999)}

    def detections(self, result) -> Detections:
        """The objects of one Ultralytics result this tag shows: mapped to a label, at or above the threshold."""
        return Detections.from_ultralytics(result).labelled(self.label_map, self.score_threshold)

    def regions_from(self, dets: Detections, target: Target) -> List[dict]:
        """Label Studio regions of the selected objects of one image."""
        if self.converter is None:
            raise NotImplementedError(f"{type(self).__name__} does not annotate images")
        return self.converter(dets, target)

    def predict_video(self, path: str, task: dict) -> List[dict]:
        """Regions for one video (streamed from `path`) of `task`."""
        raise NotImplementedError(f"{type(self).__name__} does not annotate videos")

    # ----- declared capabilities --------------------------------------------------------------
    def fit(self, event: str, data: dict) -> dict:
        """With `learns_from_annotations`: learn from one annotation webhook (`event`, its `data`);
        what happened, JSON-able."""
        raise NotImplementedError(f"{type(self).__name__} does not learn from annotations")

    def fit_tasks(self, tasks: List[dict]) -> dict:
        """With `learns_from_annotations`: Start Training, learn from every annotated task of the
        project; the training's record, JSON-able."""
        raise NotImplementedError(f"{type(self).__name__} does not learn from annotations")

    def segment_prompted(self, image: np.ndarray, prompts: Prompts) -> List[dict]:
        """With `answers_smart_tools`: the regions of the one object `prompts` point at on `image`."""
        raise NotImplementedError(f"{type(self).__name__} does not answer smart tools")

    def __repr__(self):
        return f"{type(self).__name__}({self.from_name}->{self.to_name}, {os.path.basename(self.model_path)})"

"""`<KeyPointLabels>` on an `<Image>`: pose keypoints, grouped under a hidden box per object."""

import logging
from typing import Dict, Tuple

from control_models.base import ControlModel
from label_studio_ml.exceptions import LabelConfigError
from training.dataset import TrainableTag, keypoint_order
from training.versions import ServingState
from utils.converters import to_keypoints
from utils.detections import Detections

logger = logging.getLogger(__name__)


class KeyPointLabelsModel(ControlModel):
    control_type = "KeyPointLabels"
    ultralytics_tasks = ("pose",)
    default_model = "yolov8n-pose.pt"

    def __init__(self, control, object_tag, label_interface, context):
        super().__init__(control, object_tag, label_interface, context)
        self.point_threshold = self.float_attr("model_point_threshold", 0.0)
        self.add_bboxes = self.bool_attr("model_add_bboxes", True)
        self.point_size = self.float_attr("model_point_size", 1.0)
        self.point_indices = self._point_indices()  # config errors before any weights are loaded
        self._point_map = None

    def serve_trained(self, serving: ServingState) -> None:
        """A trained version has every keypoint label, numbered in `keypoint_order` (no gaps);
        the tag's own weights keep the Labels' `model_index`."""
        super().serve_trained(serving)
        if self.serves_trained:
            self.point_indices = {label: index for index, label in enumerate(self.keypoint_order())}

    def keypoint_order(self) -> Tuple[str, ...]:
        """The tag's keypoint labels in the order a training gives them (training/dataset.py)."""
        return keypoint_order(list(self.control.labels), self._point_indices())

    def _point_indices(self) -> Dict[str, int]:
        """`{label: keypoint index}` of the Labels that have a `model_index` (a 0-based integer)."""
        indices = {}
        for label, tag in self.control.labels_attrs.items():
            raw = tag.attr.get("model_index")
            if raw is None:
                continue
            index = str(raw).strip()
            if not (index.isascii() and index.isdigit()):  # no sign, no decimal point
                raise LabelConfigError(
                    f"<{self.control_type} name=\"{self.from_name}\">: <Label value=\"{label}\"> has "
                    f"model_index={raw!r}; it must be the keypoint's 0-based index in the model (0, 1, 2, ...)"
                )
            indices[label] = int(index)
        return indices

    def trainable_tag(self) -> TrainableTag:
        """Keypoints in model order; the classes are the Labels' `predicted_values` (the parent
        boxes' labels), or one class named after the tag."""
        classes = [v.strip() for tag in self.control.labels_attrs.values()
                   for v in tag.attr.get("predicted_values", "").split(",") if v.strip()]
        return TrainableTag(self.from_name, "pose", tuple(dict.fromkeys(classes)) or (self.from_name,),
                            self.keypoint_order())

    @property
    def point_map(self) -> Dict[str, str]:
        """`{"<model class>::<keypoint index>": label}` from each Label's `predicted_values` and
        0-based `model_index` (a Label without `predicted_values` names its class by its value,
        or with a one-class model is a keypoint of that class)."""
        if self._point_map is None:
            names = list(self.model.names.values())
            by_lower = {n.lower(): n for n in names}
            mapping = {}
            for label, index in self.point_indices.items():
                tag = self.control.labels_attrs[label]
                wanted = [v.strip() for v in tag.attr.get("predicted_values", "").split(",") if v.strip()] \
                    or (names if len(names) == 1 else [label])
                for value in wanted:
                    name = value if value in names else by_lower.get(value.lower())
                    if name is not None:
                        mapping.setdefault(f"{name}::{index}", label)
            if not mapping:
                logger.error(
                    "KeyPointLabels '%s' maps no keypoint: give its Labels model_index=\"<0-based index>\" and "
                    "predicted_values=\"<model class>\"; config labels %s, model class names %s",
                    self.from_name, list(self.control.labels), names,
                )
            self._point_map = mapping
        return self._point_map

    def is_usable(self) -> bool:
        return bool(self.point_map)

    def detections(self, result) -> Detections:
        """Every object at or above the threshold: keypoints, not object classes, map to labels."""
        dets = Detections.from_ultralytics(result)
        return dets[dets.scores >= self.score_threshold]

    def regions_from(self, dets, target):
        return to_keypoints(dets, target, self.point_map, point_threshold=self.point_threshold,
                            add_bboxes=self.add_bboxes, point_size=self.point_size)

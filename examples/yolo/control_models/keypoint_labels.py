"""`<KeyPointLabels>` on an `<Image>`: pose keypoints, grouped under a hidden box per object."""

import logging
from typing import Dict

from control_models.base import ControlModel
from utils.converters import keypoint_regions

logger = logging.getLogger(__name__)


class KeyPointLabelsModel(ControlModel):
    control_type = "KeyPointLabels"
    ultralytics_tasks = ("pose",)
    default_model = "yolov8n-pose.pt"

    def __init__(self, control, object_tag, label_interface):
        super().__init__(control, object_tag, label_interface)
        self.point_threshold = self.float_attr("model_point_threshold", 0.0)
        self.add_bboxes = self.bool_attr("model_add_bboxes", True)
        self.point_size = self.float_attr("model_point_size", 1.0)
        self._point_map = None

    @property
    def point_map(self) -> Dict[str, str]:
        """`{"<model class>::<keypoint index>": label}` from each Label's `predicted_values` and
        0-based `model_index` (a Label without `predicted_values` names its class by its value)."""
        if self._point_map is None:
            names = list(self.model.names.values())
            by_lower = {n.lower(): n for n in names}
            mapping = {}
            for label, tag in self.control.labels_attrs.items():
                index = tag.attr.get("model_index")
                if index is None:
                    continue
                wanted = [v.strip() for v in tag.attr.get("predicted_values", "").split(",") if v.strip()] or [label]
                for value in wanted:
                    name = value if value in names else by_lower.get(value.lower())
                    if name is not None:
                        mapping.setdefault(f"{name}::{int(index)}", label)
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

    def regions_from(self, result, width, height):
        if result.keypoints is None or len(result.boxes) == 0:
            return []
        boxes, keypoints = result.boxes, result.keypoints
        return keypoint_regions(
            boxes.xyxy.cpu().numpy(), boxes.conf.cpu().numpy(), boxes.cls.cpu().numpy(),
            keypoints.xy.cpu().numpy(), None if keypoints.conf is None else keypoints.conf.cpu().numpy(),
            self.model.names, self.point_map, width, height, self.score_threshold, self.point_threshold,
            self.add_bboxes, self.point_size, self.from_name, self.to_name,
        )

"""`<RectangleLabels>` on an `<Image>`: object detection boxes."""

from control_models.base import ControlModel
from utils.converters import rectangle_regions


class RectangleLabelsModel(ControlModel):
    control_type = "RectangleLabels"
    ultralytics_tasks = ("detect", "pose", "segment")  # any model with boxes, e.g. a pose model finds people
    default_model = "yolov8m.pt"

    @classmethod
    def matches(cls, control, object_tag) -> bool:
        return super().matches(control, object_tag) and control.attr.get("model_obb", "false").lower() != "true"

    def regions_from(self, result, width, height):
        boxes = result.boxes
        return rectangle_regions(boxes.xyxy.cpu().numpy(), boxes.conf.cpu().numpy(), boxes.cls.cpu().numpy(),
                                 self.model.names, self.label_map, width, height, self.score_threshold,
                                 self.from_name, self.to_name)

"""`<RectangleLabels>` on an `<Image>`: object detection boxes."""

from control_models.base import ControlModel, tag_bool
from utils.converters import to_rectangles


class RectangleLabelsModel(ControlModel):
    control_type = "RectangleLabels"
    ultralytics_tasks = ("detect", "pose", "segment")  # any model with boxes, e.g. a pose model finds people
    default_model = "yolov8m.pt"
    converter = staticmethod(to_rectangles)

    @classmethod
    def matches(cls, control, object_tag) -> bool:
        return super().matches(control, object_tag) and not tag_bool(control, "model_obb", False)

"""`<RectangleLabels model_obb="true">` on an `<Image>`: oriented (rotated) boxes."""

from control_models.base import ControlModel, tag_bool
from utils.converters import to_oriented_rectangles


class RectangleLabelsObbModel(ControlModel):
    control_type = "RectangleLabels"
    ultralytics_tasks = ("obb",)
    default_model = "yolov8n-obb.pt"
    converter = staticmethod(to_oriented_rectangles)

    @classmethod
    def matches(cls, control, object_tag) -> bool:
        return super().matches(control, object_tag) and tag_bool(control, "model_obb", False)

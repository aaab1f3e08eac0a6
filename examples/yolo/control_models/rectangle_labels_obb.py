"""`<RectangleLabels model_obb="true">` on an `<Image>`: oriented (rotated) boxes."""

from control_models.base import ControlModel
from utils.converters import oriented_rectangle_regions


class RectangleLabelsObbModel(ControlModel):
    control_type = "RectangleLabels"
    ultralytics_tasks = ("obb",)
    default_model = "yolov8n-obb.pt"

    @classmethod
    def matches(cls, control, object_tag) -> bool:
        return super().matches(control, object_tag) and control.attr.get("model_obb", "false").lower() == "true"

    def regions_from(self, result, width, height):
        obb = result.obb
        return oriented_rectangle_regions(obb.xyxyxyxy.cpu().numpy(), obb.conf.cpu().numpy(), obb.cls.cpu().numpy(),
                                          self.model.names, self.label_map, width, height, self.score_threshold,
                                          self.from_name, self.to_name)

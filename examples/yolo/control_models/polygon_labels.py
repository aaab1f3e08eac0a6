"""`<PolygonLabels>` on an `<Image>`: instance segmentation outlines."""

from control_models.base import ControlModel
from utils.converters import polygon_regions


class PolygonLabelsModel(ControlModel):
    control_type = "PolygonLabels"
    ultralytics_tasks = ("segment",)
    default_model = "yolov8n-seg.pt"
    converter = staticmethod(polygon_regions)

    def regions_from(self, result, width, height):
        if result.masks is None:
            return []
        boxes = result.boxes
        return self.converter(result.masks.xy, boxes.conf.cpu().numpy(), boxes.cls.cpu().numpy(), self.model.names,
                              self.label_map, width, height, self.score_threshold, self.from_name, self.to_name)

"""`<PolygonLabels>` on an `<Image>`: instance segmentation outlines."""

from control_models.base import ControlModel
from utils.converters import to_polygons


class PolygonLabelsModel(ControlModel):
    control_type = "PolygonLabels"
    ultralytics_tasks = ("segment",)
    default_model = "yolov8n-seg.pt"
    converter = staticmethod(to_polygons)

"""`<BrushLabels>` on an `<Image>`: instance segmentation as brush masks (Label Studio RLE)."""

from control_models.polygon_labels import PolygonLabelsModel
from utils.converters import to_brushes


class BrushLabelsModel(PolygonLabelsModel):
    """Same segmentation model and outlines as PolygonLabels; only the region encoding differs."""

    control_type = "BrushLabels"
    converter = staticmethod(to_brushes)

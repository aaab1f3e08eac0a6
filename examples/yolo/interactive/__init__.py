"""Interactive segmentation for Label Studio's smart tools: clicks and boxes -> the object's outline.

An engine answers `segment(image, prompts) -> Detections`: for one BGR image and one object's
pixel prompts (`utils.prompts.PixelPrompts`), that object (0 or 1 of it) with its outline in
`polygons` and a score, ready for the converters (`to_brushes`, `to_polygons`). The output tag's
weights pick the engine:

- Segment Anything weights (`sam_b.pt`, `mobile_sam.pt`, `sam2*.pt`, ...): `SamEngine`, which
  segments whatever is clicked, with an image-embedding cache so later clicks are fast.
- any YOLO segmentation weights (`yolov8n-seg.pt`, FastSAM's too): `YoloSegEngine`, which runs
  the model as batch prediction does and keeps the instance under the clicks.
"""

from interactive.sam import SamEngine
from interactive.yolo_seg import YoloSegEngine
from utils.inference import registry
from utils.weights import is_sam_weights


def engine_for(control):
    """The engine for an output control model (`PolygonLabels`/`BrushLabels`), by its weights,
    with the cache sizes of its settings."""
    context = control.context
    if is_sam_weights(control.model_path):
        sam = registry.get(control.model_path, context.inference, pytorch=True)
        return SamEngine(sam, context.yolo.sam_cache_images)
    return YoloSegEngine(control.model, control.predict_options(), context.yolo.yolo_seg_cache_images)

"""The YOLO-seg engine: run a segmentation model as batch prediction does (same registry, runtime
and threshold), then keep the one instance the annotator's prompts point at. The instances of the
images clicked last are kept (by image content), so later clicks on an image run no model."""

from dataclasses import replace

import numpy as np

from interactive.cache import ImageCache, image_digest
from interactive.geometry import box_iou, clip_to_box, contains
from utils.detections import Detections
from utils.inference import LoadedModel
from utils.prompts import PixelPrompts

instances = ImageCache()  # outlines: a few KB per image


class YoloSegEngine:
    def __init__(self, model: LoadedModel, predict_options: dict, cache_images: int):
        self.model = model
        self.predict_options = predict_options
        self.cache_images = cache_images  # `YOLO_SEG_CACHE_IMAGES`: images whose instances are kept

    def segment(self, image: np.ndarray, prompts: PixelPrompts) -> Detections:
        key = (self.model.path, self.model.device, self.model.runtime, repr(sorted(self.predict_options.items())),
               image_digest(image))
        return pick_instance(instances.get(key, lambda: self._instances(image), self.cache_images), prompts)

    def _instances(self, image: np.ndarray) -> Detections:
        (result,) = self.model.predict([image], batch_size=1, **self.predict_options)
        return Detections.from_ultralytics(result)


def pick_instance(dets: Detections, prompts: PixelPrompts) -> Detections:
    """The instance holding every positive point and no negative one (0 or 1 object).

    With a box: among those, the one whose outline best fills the box (highest IoU), clipped to
    the box; without: the most confident. No positive point and no box point at nothing.
    """
    nothing = dets[np.zeros(len(dets), dtype=bool)]
    if not len(prompts.positives) and prompts.box is None:
        return nothing
    candidates = [i for i, polygon in enumerate(dets.polygons or []) if len(polygon) >= 3
                  and contains(polygon, prompts.positives).all() and not contains(polygon, prompts.negatives).any()]
    if prompts.box is None:
        return dets[[max(candidates, key=lambda i: dets.scores[i])]] if candidates else nothing
    ious = {i: box_iou(dets.polygons[i], prompts.box) for i in candidates}
    best = max(candidates, key=ious.get, default=None)
    clipped = None if best is None or ious[best] <= 0 else clip_to_box(dets.polygons[best], prompts.box)
    return nothing if clipped is None else replace(dets[[best]], polygons=[clipped])

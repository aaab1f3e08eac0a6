"""The Segment Anything engine (SAM, SAM 2/2.1, MobileSAM through Ultralytics' `SAM`).

SAM splits into a heavy image encoder and a light prompt decoder. An annotator clicks several
times on one image (and again after each correction), so the image embedding is computed once
and kept (`embeddings`, by image content); later clicks on that image pay the decoder only.
Every model call runs on the device's inference thread (`LoadedModel.run`), which also keeps
Ultralytics' predictor, a stateful object, to one caller at a time.
"""

import logging

import numpy as np

from interactive.cache import ImageCache, image_digest
from interactive.geometry import mask_to_polygon
from utils.detections import Detections
from utils.inference import LoadedModel
from utils.prompts import PixelPrompts

logger = logging.getLogger(__name__)

SAM_IMAGE_SIZE = 1024  # the encoders' input size (ViT position embeddings are fixed to it)


# An embedding is a few MB (SAM: 256x64x64 floats; SAM 2 adds high-resolution features).
embeddings = ImageCache()


class SamEngine:
    def __init__(self, model: LoadedModel, cache_images: int):
        self.model = model
        self.cache_images = cache_images  # `SAM_CACHE_IMAGES`: images whose embeddings are kept

    def segment(self, image: np.ndarray, prompts: PixelPrompts) -> Detections:
        """The best of SAM's masks for the prompts (0 or 1 object), as an outline."""
        empty = Detections(class_ids=np.zeros(0, int), scores=np.zeros(0), polygons=[])
        if not len(prompts.positives) and prompts.box is None:
            return empty
        key = (self.model.path, self.model.device, image_digest(image))
        mask, score = self.model.run(lambda sam: self._decode(sam, image, key, prompts))
        polygon = None if mask is None else mask_to_polygon(mask)
        if polygon is None:
            return empty
        return Detections(class_ids=[0], scores=[score], polygons=[polygon])

    def _decode(self, sam, image: np.ndarray, key, prompts: PixelPrompts):
        """(mask HxW bool, score) of the best mask, or (None, 0); runs on the inference thread."""
        predictor = _predictor(sam, self.model.device)

        def encode():
            logger.debug("SAM: encoding image %s", key[-1])
            predictor.set_image(image)
            return predictor.features

        features = embeddings.get(key, encode, self.cache_images)
        has_points = len(prompts.points) > 0
        masks, boxes = predictor.inference_features(
            features, src_shape=image.shape[:2],
            bboxes=None if prompts.box is None else prompts.box[None],
            points=prompts.points[None] if has_points else None,       # one object: (1, N, 2)
            labels=prompts.point_labels[None] if has_points else None,  # 1 positive, 0 negative
            # One click is ambiguous (a part or the whole?): let SAM offer three and keep its best.
            multimask_output=prompts.box is None and len(prompts.points) == 1,
        )
        if masks is None or not len(masks):
            return None, 0.0
        best = int(boxes[:, 4].argmax())
        return masks[best].cpu().numpy(), float(boxes[best, 4])


def _predictor(sam, device: str):
    """Ultralytics' SAM predictor of the loaded model, made on first use and kept on it."""
    if sam.predictor is None:
        predictor_class = sam.task_map["segment"]["predictor"]
        sam.predictor = predictor_class(overrides={"imgsz": SAM_IMAGE_SIZE, "device": device, "verbose": False,
                                                   "save": False, "conf": 0.0})
        sam.predictor.setup_model(model=sam.model, verbose=False)
    return sam.predictor

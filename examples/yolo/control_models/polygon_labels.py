"""`<PolygonLabels>` on an `<Image>`: instance segmentation outlines; also the answer of smart tools."""

import logging
from dataclasses import replace
from typing import List

import numpy as np

from control_models.base import ControlModel
from interactive import engine_for
from utils.converters import to_polygons
from utils.weights import is_sam_weights
from utils.prompts import Prompts

logger = logging.getLogger(__name__)


class PolygonLabelsModel(ControlModel):
    control_type = "PolygonLabels"
    ultralytics_tasks = ("segment",)
    default_model = "yolov8n-seg.pt"
    converter = staticmethod(to_polygons)
    answers_smart_tools = True

    def is_usable(self) -> bool:
        """Segment Anything weights segment what is clicked: they answer smart tools only."""
        if is_sam_weights(self.model_path):
            logger.info("%r: SAM weights answer smart-tool clicks only; skipped in batch prediction", self)
            return False
        return super().is_usable()

    def segment_prompted(self, image: np.ndarray, prompts: Prompts) -> List[dict]:
        """Smart tools: the regions of the one object `prompts` point at on `image`, labelled with
        the prompt's label (the tag's first label when the prompt has none)."""
        height, width = image.shape[:2]
        dets = engine_for(self).segment(image, prompts.in_pixels(width, height))
        label = prompts.label or next(iter(self.control.labels), None)
        return self.converter(replace(dets, labels=[label] * len(dets)), self.target(width, height))

"""One control model per Label Studio control tag; `control_models_for` picks them from a config."""

import logging
from typing import List, Optional

from control_models.base import ControlModel, tag_bool
from control_models.context import ControlContext
from control_models.brush_labels import BrushLabelsModel
from control_models.choices import ChoicesModel
from control_models.keypoint_labels import KeyPointLabelsModel
from control_models.polygon_labels import PolygonLabelsModel
from control_models.rectangle_labels import RectangleLabelsModel
from control_models.rectangle_labels_obb import RectangleLabelsObbModel
from control_models.taxonomy import TaxonomyModel
from control_models.timeline_labels import TimelineLabelsModel, TrainableTimelineLabelsModel
from control_models.video_rectangle import VideoRectangleModel
from label_studio_ml.exceptions import LabelConfigError
from training.versions import ServingState

logger = logging.getLogger(__name__)

CONTROL_MODELS = [
    RectangleLabelsModel,
    RectangleLabelsObbModel,
    PolygonLabelsModel,
    BrushLabelsModel,
    ChoicesModel,
    TaxonomyModel,
    KeyPointLabelsModel,
    VideoRectangleModel,
    TimelineLabelsModel,
    TrainableTimelineLabelsModel,
]


def supported_tags() -> List[str]:
    return sorted({f"{m.control_type} ({'/'.join(m.object_types)})" for m in CONTROL_MODELS})


def control_models_for(label_interface, context: ControlContext, strict: bool = True,
                       serving: Optional[ServingState] = None) -> List[ControlModel]:
    """A control model for every servable control tag, in config order (`model_skip="true"` skipped),
    each given the request's `context`.

    With `strict`, a config with nothing servable is a 400 naming the supported tags. With
    `serving` (what serves the project, read once per request), trainable tags serve their trained
    weights (else their own).
    """
    if label_interface is None:
        raise LabelConfigError("No labeling config: send 'label_config' with /predict or call /setup first")
    models = []
    for control in label_interface.controls:
        if tag_bool(control, "model_skip", False):
            continue
        for object_tag in control.objects:
            for model_class in CONTROL_MODELS:
                if model_class.matches(control, object_tag):
                    models.append(model_class(control, object_tag, label_interface, context))
                    if serving is not None:
                        models[-1].serve_trained(serving)
                    break
    if not models and strict:
        raise LabelConfigError(
            "No control tag in the labeling config can be served by the YOLO backend; supported: "
            + ", ".join(supported_tags())
        )
    return models

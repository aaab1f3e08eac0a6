"""Label Studio smart-tool prompts -> pixel prompts for one object (pure: no model, no I/O).

Label Studio's smart tools send the regions the annotator just drew in `context.result`
(`ls_wire_samples/POST_predict_interactive.json`): `keypointlabels` clicks (`is_positive` false for
an Alt-click, i.e. a negative point) and `rectanglelabels` boxes, in percent of the image, with the
label the annotator chose. Together they describe ONE object on one image. `read_prompts` collects
them per image; `Prompts.in_pixels` scales them to the image the engine sees. The way back to
percent is the converters' (`utils.converters`, `Target.percent_point`).
"""

import math
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np

from label_studio_ml.exceptions import BadRequest
from label_studio_ml.parsing import parse_bool

POINT_TYPE = "keypointlabels"
BOX_TYPE = "rectanglelabels"


@dataclass(frozen=True)
class PixelPrompts:
    """One object's prompts in pixels of a `width` x `height` image."""

    points: np.ndarray            # (N, 2) float x, y
    point_labels: np.ndarray      # (N,) int: 1 positive, 0 negative (SAM's convention)
    box: Optional[np.ndarray]     # (4,) float x1, y1, x2, y2, or None
    width: int
    height: int

    @property
    def positives(self) -> np.ndarray:
        return self.points[self.point_labels == 1]

    @property
    def negatives(self) -> np.ndarray:
        return self.points[self.point_labels == 0]


@dataclass(frozen=True)
class Prompts:
    """The prompts of one object on the image `to_name`, in percent as Label Studio sends them."""

    to_name: str
    points: tuple = ()              # ((x%, y%, positive: bool), ...)
    box: Optional[tuple] = None     # (x1%, y1%, x2%, y2%): the last box drawn
    label: Optional[str] = None     # the label the annotator chose (first labelled prompt)

    def in_pixels(self, width: int, height: int) -> PixelPrompts:
        sx, sy = width / 100.0, height / 100.0
        points = np.array([(x * sx, y * sy) for x, y, _ in self.points], dtype=float).reshape(-1, 2)
        labels = np.array([1 if positive else 0 for _, _, positive in self.points], dtype=int)
        box = None
        if self.box is not None:
            x1, y1, x2, y2 = self.box
            box = np.array([x1 * sx, y1 * sy, x2 * sx, y2 * sy], dtype=float)
        return PixelPrompts(points, labels, box, int(width), int(height))


def read_prompts(context: Optional[dict]) -> List[Prompts]:
    """The smart-tool prompts of `context`, one `Prompts` per image; [] when there are none (no
    context, an empty one, or regions that are no prompts): then the request is a normal prediction.
    A prompt region with unusable coordinates is a 400."""
    if not isinstance(context, dict):
        return []
    regions = context.get("result")
    if not isinstance(regions, list):
        return []
    by_image: Dict[str, dict] = {}
    for region in regions:
        if not isinstance(region, dict) or region.get("type") not in (POINT_TYPE, BOX_TYPE):
            continue
        value = region.get("value")
        if not isinstance(value, dict):
            raise BadRequest(f"context region {region.get('id')!r} has no 'value' object")
        found = by_image.setdefault(str(region.get("to_name", "")), {"points": [], "box": None, "label": None})
        if region["type"] == POINT_TYPE:
            found["points"].append((*_numbers(value, ("x", "y"), region), _is_positive(region)))
        else:
            found["box"] = _box_corners(value, region)
        if found["label"] is None:
            found["label"] = _label(value, region["type"])
    return [Prompts(to_name, tuple(p["points"]), p["box"], p["label"]) for to_name, p in by_image.items()]


def _numbers(value: dict, keys: tuple, region: dict) -> tuple:
    numbers = []
    for key in keys:
        number = value.get(key)
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
            raise BadRequest(f"context region {region.get('id')!r} ({region.get('type')}): value.{key} must be a "
                             f"number (percent of the image), not {number!r}")
        numbers.append(float(number))
    return tuple(numbers)


def _is_positive(region: dict) -> bool:
    """Label Studio marks an Alt-click `is_positive: false`; a point without the key is positive."""
    try:
        return parse_bool(region.get("is_positive"), True)
    except ValueError:
        raise BadRequest(f"context region {region.get('id')!r}: is_positive must be true or false")


def _box_corners(value: dict, region: dict) -> tuple:
    """(x1, y1, x2, y2) percent of a rectangle; a rotated one (rotated about its top-left corner,
    as Label Studio draws it) by the axis-aligned box around it."""
    x, y, width, height = _numbers(value, ("x", "y", "width", "height"), region)
    angle = math.radians(_numbers(value, ("rotation",), region)[0] if value.get("rotation") else 0.0)
    if angle == 0:
        return x, y, x + width, y + height
    # Percent of the width and percent of the height are different units: rotate in pixels.
    scale_x, scale_y = (size / 100 for size in _numbers(
        {"original_width": region.get("original_width") or 100, "original_height": region.get("original_height") or 100},
        ("original_width", "original_height"), region))
    cos, sin = math.cos(angle), math.sin(angle)
    xs, ys = [], []
    for dx, dy in ((0, 0), (width * scale_x, 0), (width * scale_x, height * scale_y), (0, height * scale_y)):
        xs.append(x + (dx * cos - dy * sin) / scale_x)
        ys.append(y + (dx * sin + dy * cos) / scale_y)
    return min(xs), min(ys), max(xs), max(ys)


def _label(value: dict, kind: str) -> Optional[str]:
    labels = value.get(kind)
    if isinstance(labels, list) and labels and isinstance(labels[0], str):
        return labels[0]
    return None

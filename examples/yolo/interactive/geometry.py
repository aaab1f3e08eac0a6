"""Pixel geometry of the interactive engines: outlines versus clicks, boxes and masks.

Instances are outlines (`Detections.polygons`, pixels) as everywhere else in the backend; a mask
is rasterised only inside the window a question is about, never at full image size per instance.
"""

from typing import Optional, Tuple

import cv2
import numpy as np


def contains(polygon: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N,) bool: whether each pixel point (N, 2) lies inside or on `polygon` (K, 2)."""
    contour = np.asarray(polygon, dtype=np.float32).reshape(-1, 1, 2)
    return np.array([cv2.pointPolygonTest(contour, (float(x), float(y)), False) >= 0 for x, y in points], dtype=bool)


def _raster(polygon: np.ndarray, window: Tuple[int, int, int, int]) -> np.ndarray:
    """uint8 mask (0/1) of `polygon` inside `window` = (x1, y1, x2, y2) pixels, in window coordinates."""
    x1, y1, x2, y2 = window
    mask = np.zeros((max(0, y2 - y1), max(0, x2 - x1)), dtype=np.uint8)
    if mask.size:
        points = np.round(np.asarray(polygon, dtype=float) - (x1, y1)).astype(np.int32)
        cv2.fillPoly(mask, [points], 1)
    return mask


def _window(xyxy) -> Tuple[int, int, int, int]:
    x1, y1, x2, y2 = xyxy
    return int(np.floor(x1)), int(np.floor(y1)), int(np.ceil(x2)) + 1, int(np.ceil(y2)) + 1


def box_iou(polygon: np.ndarray, box: np.ndarray) -> float:
    """IoU of the filled `polygon` with the rectangle `box` (x1, y1, x2, y2 pixels)."""
    polygon = np.asarray(polygon, dtype=float)
    area = int(_raster(polygon, _window((*polygon.min(axis=0), *polygon.max(axis=0)))).sum())
    inside = int(_raster(polygon, _window(box)).sum())
    x1, y1, x2, y2 = _window(box)
    union = area + (x2 - x1) * (y2 - y1) - inside
    return inside / union if union > 0 else 0.0


def clip_to_box(polygon: np.ndarray, box: np.ndarray) -> Optional[np.ndarray]:
    """The part of `polygon` inside `box`, as an outline (its largest piece); None when nothing is inside."""
    x1, y1, _, _ = window = _window(box)
    outline = mask_to_polygon(_raster(polygon, window))
    return None if outline is None else outline + (x1, y1)


def mask_to_polygon(mask: np.ndarray) -> Optional[np.ndarray]:
    """Outline (K, 2) pixels of the largest connected piece of a mask; None for an empty mask."""
    contours, _ = cv2.findContours(np.asarray(mask, dtype=np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    contours = [c for c in contours if len(c) >= 3]
    if not contours:
        return None
    return max(contours, key=cv2.contourArea).reshape(-1, 2).astype(float)

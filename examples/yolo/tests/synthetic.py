"""Deterministic synthetic scenes with known ground truth for the YOLO tests.

Every generator takes an integer ``seed`` and always returns exactly the same
image and ground truth for that seed (numpy ``default_rng``).  Images are
OpenCV-style BGR ``uint8`` arrays of shape ``(height, width, 3)``; all ground
truth is expressed in PIXELS of that image (x to the right, y downwards).

Scenes are simple and easy to learn: flat, strongly coloured shapes on a
noisy grey background, 1-3 non-overlapping objects per scene, each ~15-40 %
of the shorter image side.

Class lists
-----------
* ``DETECTION_CLASSES`` / ``SEGMENTATION_CLASSES`` / ``CLASSIFICATION_CLASSES``:
  ``("circle", "square", "triangle")`` (red, green, blue).
* ``OBB_CLASSES``: ``("rectangle", "ellipse")`` (orange, purple), elongated
  (aspect 2.2-3.0) so their orientation is well defined modulo 180 degrees.
* ``POSE_CLASSES``: ``("card",)`` - a light rectangle (aspect ~1.4) with four
  coloured corner markers; ``POSE_KEYPOINTS`` gives the keypoint order.

Angle convention
----------------
``angle_deg`` is the rotation of the shape as seen on screen, CLOCKWISE
positive (because the image y axis points down), i.e. a point ``(x, y)`` of the
unrotated shape (relative to its centre) is mapped to
``(x*cos(a) - y*sin(a), x*sin(a) + y*cos(a))``.  This is the same convention
as ``cv2.boxPoints`` / Ultralytics ``xywhr`` (radians there) and Label
Studio's ``rotation`` (which however rotates around the top-left corner).
For OBB scenes the angle is the direction of the LONG side, in ``[0, 180)``.

Seeds
-----
Training data for the bundled test models used seeds ``< HELDOUT_SEED_START``;
tests should use seeds ``>= HELDOUT_SEED_START`` to get scenes the models
have never seen.
"""

from __future__ import annotations

import logging
import math
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "DETECTION_CLASSES",
    "SEGMENTATION_CLASSES",
    "CLASSIFICATION_CLASSES",
    "OBB_CLASSES",
    "POSE_CLASSES",
    "POSE_KEYPOINTS",
    "POSE_KEYPOINT_COLORS",
    "NUM_KEYPOINTS",
    "COLORS",
    "HELDOUT_SEED_START",
    "background",
    "shape_polygon",
    "draw_shape",
    "draw_card",
    "card_geometry",
    "polygon_to_mask",
    "obb_corners",
    "detection_scene",
    "obb_scene",
    "segmentation_scene",
    "classification_image",
    "pose_scene",
]

DETECTION_CLASSES: Tuple[str, ...] = ("circle", "square", "triangle")
SEGMENTATION_CLASSES: Tuple[str, ...] = DETECTION_CLASSES
CLASSIFICATION_CLASSES: Tuple[str, ...] = DETECTION_CLASSES
OBB_CLASSES: Tuple[str, ...] = ("rectangle", "ellipse")
POSE_CLASSES: Tuple[str, ...] = ("card",)

#: Keypoint order of the "card" pose class.  Names refer to the card's own
#: (unrotated) frame; each keypoint is the centre of a coloured marker:
#: 0 top_left = red, 1 top_right = green, 2 bottom_right = blue,
#: 3 bottom_left = yellow.  Cards are rotated by any angle in [0, 360), so the
#: colour (not the on-screen position) identifies the keypoint.
POSE_KEYPOINTS: Tuple[str, ...] = ("top_left", "top_right", "bottom_right", "bottom_left")
NUM_KEYPOINTS: int = len(POSE_KEYPOINTS)
POSE_KEYPOINT_COLORS: Tuple[Tuple[int, int, int], ...] = (
    (30, 30, 230),  # red (BGR)
    (30, 200, 30),  # green
    (230, 60, 30),  # blue
    (20, 220, 240),  # yellow
)

#: Fill colour (BGR) of each class.
COLORS: Dict[str, Tuple[int, int, int]] = {
    "circle": (40, 40, 220),  # red
    "square": (40, 190, 40),  # green
    "triangle": (220, 110, 30),  # blue
    "rectangle": (20, 140, 250),  # orange
    "ellipse": (200, 50, 190),  # purple
    "card": (235, 235, 235),  # near white
}

HELDOUT_SEED_START: int = 1_000_000

Size = Union[float, Tuple[float, float]]

_CIRCLE_VERTICES = 64


# --------------------------------------------------------------------------- #
# Geometry and drawing primitives (reusable, e.g. for a future video generator)
# --------------------------------------------------------------------------- #
def _rotate(points: np.ndarray, angle_deg: float) -> np.ndarray:
    """Rotate Nx2 points around the origin, clockwise on screen (y down)."""
    a = math.radians(angle_deg)
    c, s = math.cos(a), math.sin(a)
    rot = np.array([[c, -s], [s, c]], dtype=np.float64)
    return points @ rot.T


def _wh(size: Size) -> Tuple[float, float]:
    if isinstance(size, (tuple, list, np.ndarray)):
        return float(size[0]), float(size[1])
    return float(size), float(size)


def shape_polygon(
    label: str,
    center: Sequence[float],
    size: Size,
    angle_deg: float = 0.0,
) -> np.ndarray:
    """Outline of a shape as an Nx2 float array of pixel coordinates.

    ``size`` is the unrotated extent: a scalar for circle (diameter), square
    (side) and triangle (side of the equilateral triangle, centred on its
    centroid, apex pointing up), or ``(w, h)`` for rectangle, ellipse and card
    (a scalar means ``w == h``).  The shape is rotated clockwise by
    ``angle_deg`` around ``center``.  Vertices are listed clockwise on screen.
    """
    w, h = _wh(size)
    if label in ("circle", "ellipse"):
        t = np.linspace(0.0, 2.0 * math.pi, _CIRCLE_VERTICES, endpoint=False)
        pts = np.stack([np.cos(t) * w / 2.0, np.sin(t) * h / 2.0], axis=1)
    elif label in ("square", "rectangle", "card"):
        pts = np.array(
            [[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]],
            dtype=np.float64,
        )
    elif label == "triangle":
        r = w / math.sqrt(3.0)  # circumradius of an equilateral triangle
        t = np.radians([-90.0, 30.0, 150.0])
        pts = np.stack([np.cos(t) * r, np.sin(t) * r], axis=1)
    else:
        raise ValueError(f"unknown shape label {label!r}")
    return _rotate(pts, angle_deg) + np.asarray(center, dtype=np.float64)


def _fill(image: np.ndarray, polygon: np.ndarray, color, antialias: bool = True) -> None:
    pts = np.round(np.asarray(polygon) * 16.0).astype(np.int32).reshape(-1, 1, 2)
    cv2.fillPoly(
        image, [pts], color, lineType=cv2.LINE_AA if antialias else cv2.LINE_8, shift=4
    )


def polygon_to_mask(polygon: np.ndarray, width: int, height: int) -> np.ndarray:
    """Rasterise a pixel polygon (Nx2) into a ``(height, width)`` bool mask."""
    mask = np.zeros((height, width), dtype=np.uint8)
    _fill(mask, polygon, 1, antialias=False)
    return mask.astype(bool)


def draw_shape(
    image: np.ndarray,
    label: str,
    center: Sequence[float],
    size: Size,
    angle_deg: float = 0.0,
    color: Optional[Sequence[int]] = None,
) -> np.ndarray:
    """Draw a filled shape in place on a BGR image and return its polygon.

    ``label`` is any key of ``COLORS`` (``"card"`` draws the card with its
    keypoint markers, see :func:`draw_card`).  ``color`` defaults to
    ``COLORS[label]``.  Returns the outline as in :func:`shape_polygon`.
    """
    if label == "card":
        return draw_card(image, center, size, angle_deg, color=color)[0]
    polygon = shape_polygon(label, center, size, angle_deg)
    _fill(image, polygon, tuple(int(c) for c in (color if color is not None else COLORS[label])))
    return polygon


def card_geometry(
    center: Sequence[float], size: Size, angle_deg: float = 0.0
) -> Tuple[np.ndarray, np.ndarray, float]:
    """Geometry of a pose "card": ``(outline 4x2, keypoints Kx2, marker_radius)``."""
    w, h = _wh(size)
    r = 0.13 * min(w, h)
    inset = 1.35 * r
    local = np.array(
        [
            [-w / 2 + inset, -h / 2 + inset],  # top_left
            [w / 2 - inset, -h / 2 + inset],  # top_right
            [w / 2 - inset, h / 2 - inset],  # bottom_right
            [-w / 2 + inset, h / 2 - inset],  # bottom_left
        ],
        dtype=np.float64,
    )
    keypoints = _rotate(local, angle_deg) + np.asarray(center, dtype=np.float64)
    return shape_polygon("card", center, (w, h), angle_deg), keypoints, r


def draw_card(
    image: np.ndarray,
    center: Sequence[float],
    size: Size,
    angle_deg: float = 0.0,
    color: Optional[Sequence[int]] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """Draw a pose card in place; return ``(outline 4x2, keypoints Kx2)``."""
    outline, keypoints, r = card_geometry(center, size, angle_deg)
    _fill(image, outline, tuple(int(c) for c in (color if color is not None else COLORS["card"])))
    for (x, y), kp_color in zip(keypoints, POSE_KEYPOINT_COLORS):
        cv2.circle(
            image,
            (int(round(x * 16)), int(round(y * 16))),
            int(round(r * 16)),
            kp_color,
            thickness=-1,
            lineType=cv2.LINE_AA,
            shift=4,
        )
    return outline, keypoints


def obb_corners(center: Sequence[float], size: Size, angle_deg: float) -> np.ndarray:
    """Corners (4x2) of a rotated rectangle.

    Order: the unrotated top-left, top-right, bottom-right, bottom-left
    corners after rotation (clockwise on screen).
    """
    return shape_polygon("rectangle", center, size, angle_deg)


def background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Noisy, slightly tinted grey background with a soft gradient."""
    base = rng.uniform(85, 165)
    tint = rng.uniform(-12, 12, size=3)
    gx, gy = rng.uniform(-25, 25, size=2)
    xs = np.linspace(-0.5, 0.5, width)[None, :]
    ys = np.linspace(-0.5, 0.5, height)[:, None]
    grad = gx * xs + gy * ys
    img = base + grad[..., None] + tint[None, None, :]
    img = img + rng.normal(0.0, 8.0, size=(height, width, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _jitter_color(rng: np.random.Generator, color: Sequence[int], amount: float = 18) -> Tuple[int, ...]:
    c = np.asarray(color, dtype=np.float64) + rng.uniform(-amount, amount, size=3)
    return tuple(int(v) for v in np.clip(c, 0, 255))


def _place(
    rng: np.random.Generator,
    radii: Sequence[float],
    width: int,
    height: int,
    gap: float = 4.0,
    tries: int = 500,
) -> List[Tuple[float, float]]:
    """Non-overlapping centres for discs of the given radii inside the image.

    Returns one centre per radius, ``None`` for a disc that could not be placed
    (never the first one); callers drop those objects.
    """
    centers: List[Optional[Tuple[float, float]]] = []
    placed_r: List[float] = []
    for i, r in enumerate(radii):
        lo_x, hi_x = r + 2, width - r - 2
        lo_y, hi_y = r + 2, height - r - 2
        if lo_x > hi_x or lo_y > hi_y:
            centers.append(None)
            placed_r.append(0.0)
            continue
        for _ in range(tries):
            c = (rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y))
            if all(
                o is None or math.hypot(c[0] - o[0], c[1] - o[1]) >= r + orr + gap
                for o, orr in zip(centers, placed_r)
            ):
                centers.append(c)
                placed_r.append(r)
                break
        else:
            centers.append(None)
            placed_r.append(0.0)
    return centers


def _bounding_radius(label: str, size: Size) -> float:
    w, h = _wh(size)
    if label in ("circle", "ellipse"):
        return max(w, h) / 2.0
    if label == "triangle":
        return w / math.sqrt(3.0)
    return math.hypot(w, h) / 2.0


def _xyxy(polygon: np.ndarray, width: int, height: int) -> Tuple[float, float, float, float]:
    x1, y1 = polygon.min(axis=0)
    x2, y2 = polygon.max(axis=0)
    return (
        float(max(0.0, x1)),
        float(max(0.0, y1)),
        float(min(float(width), x2)),
        float(min(float(height), y2)),
    )


def _n_objects(rng: np.random.Generator, max_objects: int) -> int:
    return int(rng.integers(1, max_objects + 1))


# --------------------------------------------------------------------------- #
# Scene generators
# --------------------------------------------------------------------------- #
def _place_and_draw(rng: np.random.Generator, img: np.ndarray, specs) -> List[dict]:
    """Place `(label, size, angle)` shapes without overlap and draw them; shapes that find no
    room are left out. Returns `{"label", "polygon", "center", "size", "angle_deg"}` per shape."""
    height, width = img.shape[:2]
    centers = _place(rng, [_bounding_radius(l, s) for l, s, _ in specs], width, height)
    objects = []
    for (label, size, angle), c in zip(specs, centers):
        if c is None:
            continue
        poly = draw_shape(img, label, c, size, angle, color=_jitter_color(rng, COLORS[label]))
        objects.append({"label": label, "polygon": poly, "center": (float(c[0]), float(c[1])), "size": size,
                        "angle_deg": angle})
    return objects


def _shape_scene(
    seed: int,
    width: int,
    height: int,
    classes: Sequence[str],
    max_objects: int,
    size_range: Tuple[float, float] = (0.15, 0.40),
):
    rng = np.random.default_rng(seed)
    img = background(rng, width, height)
    n = _n_objects(rng, max_objects)
    side = min(width, height)
    specs = []
    for _ in range(n):
        label = classes[int(rng.integers(len(classes)))]
        # nominal size so that the bounding box spans ~size_range of the short side
        extent = rng.uniform(*size_range) * side
        if label == "triangle":
            size = extent * 1.1
        else:
            size = extent
        angle = float(rng.uniform(0, 360)) if label != "circle" else 0.0
        specs.append((label, size, angle))
    objects = _place_and_draw(rng, img, specs)
    for o in objects:
        o["size"] = float(o["size"])
    return img, objects


def detection_scene(
    seed: int, width: int = 320, height: int = 240, max_objects: int = 3
) -> Tuple[np.ndarray, List[dict]]:
    """Scene of 1..max_objects circles / squares / triangles.

    Returns ``(image, objects)``; each object is a dict with ``label`` (one of
    ``DETECTION_CLASSES``), ``xyxy`` (tight axis-aligned box in pixels,
    ``(x1, y1, x2, y2)``), plus ``polygon`` (Nx2), ``center``, ``size`` and
    ``angle_deg`` of the drawn shape.
    """
    img, objects = _shape_scene(seed, width, height, DETECTION_CLASSES, max_objects)
    for o in objects:
        o["xyxy"] = _xyxy(o["polygon"], width, height)
    return img, objects


def segmentation_scene(
    seed: int, width: int = 320, height: int = 240, max_objects: int = 3
) -> Tuple[np.ndarray, List[dict]]:
    """Like :func:`detection_scene` (different images for the same seed).

    Each object has ``label`` (``SEGMENTATION_CLASSES``), ``mask`` (HxW bool,
    the filled shape), ``polygon`` (Nx2 float pixel outline, clockwise on
    screen), ``xyxy``, ``center``, ``size``, ``angle_deg``.  Objects never
    overlap, so masks are exact.
    """
    img, objects = _shape_scene(seed + 7_919, width, height, SEGMENTATION_CLASSES, max_objects)
    for o in objects:
        o["xyxy"] = _xyxy(o["polygon"], width, height)
        o["mask"] = polygon_to_mask(o["polygon"], width, height)
    return img, objects


def obb_scene(
    seed: int, width: int = 320, height: int = 240, max_objects: int = 3
) -> Tuple[np.ndarray, List[dict]]:
    """Scene of 1..max_objects elongated rectangles / ellipses at any angle.

    Each object has ``label`` (``OBB_CLASSES``), ``center`` ``(cx, cy)``,
    ``size`` ``(w, h)`` with ``w > h`` (long side first, aspect 2.2-3.0),
    ``angle_deg`` in ``[0, 180)`` (clockwise on screen, direction of the long
    side, see module doc), ``corners`` (4x2, see :func:`obb_corners`; for an
    ellipse: its tight oriented bounding rectangle), ``polygon`` (drawn
    outline) and ``xyxy`` (axis-aligned box of the drawn outline).
    """
    rng = np.random.default_rng(seed + 15_485_863)
    img = background(rng, width, height)
    side = min(width, height)
    n = _n_objects(rng, max_objects)
    specs = []
    for _ in range(n):
        label = OBB_CLASSES[int(rng.integers(len(OBB_CLASSES)))]
        w = rng.uniform(0.25, 0.50) * side
        h = w / rng.uniform(2.2, 3.0)
        angle = float(rng.uniform(0.0, 180.0))
        specs.append((label, (float(w), float(h)), angle))
    objects = _place_and_draw(rng, img, specs)
    for o in objects:
        o["corners"] = obb_corners(o["center"], o["size"], o["angle_deg"])
        o["xyxy"] = _xyxy(o["polygon"], width, height)
    return img, objects


def classification_image(
    seed: int, label: Optional[str] = None, width: int = 160, height: int = 160
) -> Tuple[np.ndarray, str]:
    """Image with a single shape of class ``label`` (random if ``None``).

    Returns ``(image, label)`` with ``label`` in ``CLASSIFICATION_CLASSES``.
    The shape covers 30-60 % of the shorter side, at a random position and
    rotation.
    """
    rng = np.random.default_rng(seed + 32_452_843)
    if label is None:
        label = CLASSIFICATION_CLASSES[int(rng.integers(len(CLASSIFICATION_CLASSES)))]
    elif label not in CLASSIFICATION_CLASSES:
        raise ValueError(f"unknown class {label!r}; expected one of {CLASSIFICATION_CLASSES}")
    img = background(rng, width, height)
    size = rng.uniform(0.30, 0.60) * min(width, height)
    angle = float(rng.uniform(0, 360)) if label != "circle" else 0.0
    (c,) = _place(rng, [_bounding_radius(label, size)], width, height)
    if c is None:  # cannot happen with the sizes above, but stay safe
        c = (width / 2.0, height / 2.0)
    draw_shape(img, label, c, size, angle, color=_jitter_color(rng, COLORS[label]))
    return img, label


def pose_scene(
    seed: int, width: int = 320, height: int = 240, max_objects: int = 2
) -> Tuple[np.ndarray, List[dict]]:
    """Scene of 1..max_objects "card" objects with 4 keypoints each.

    Each object has ``label`` (``"card"``), ``xyxy`` (axis-aligned box of the
    card), ``keypoints`` (``NUM_KEYPOINTS`` x 2 pixel array, order
    ``POSE_KEYPOINTS``: centres of the red, green, blue, yellow markers),
    ``polygon`` (4x2 card outline), ``center``, ``size`` ``(w, h)`` and
    ``angle_deg`` (any value in [0, 360)).
    """
    rng = np.random.default_rng(seed + 49_979_687)
    img = background(rng, width, height)
    side = min(width, height)
    n = _n_objects(rng, max_objects)
    specs = []
    for _ in range(n):
        w = rng.uniform(0.30, 0.50) * side
        h = w / rng.uniform(1.25, 1.5)
        specs.append(((float(w), float(h)), float(rng.uniform(0.0, 360.0))))
    centers = _place(rng, [_bounding_radius("card", s) for s, _ in specs], width, height)
    objects = []
    for (size, angle), c in zip(specs, centers):
        if c is None:
            continue
        outline, keypoints = draw_card(img, c, size, angle, color=_jitter_color(rng, COLORS["card"], 15))
        objects.append(
            {
                "label": "card",
                "xyxy": _xyxy(outline, width, height),
                "keypoints": keypoints,
                "polygon": outline,
                "center": (float(c[0]), float(c[1])),
                "size": size,
                "angle_deg": angle,
            }
        )
    return img, objects

"""Small synthetic videos with known per-frame ground truth, drawn with synthetic.py's helpers.

Videos are written with OpenCV's 'mp4v' codec. Frames are 1-based in every truth returned here,
as in Label Studio.
"""

import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

import synthetic

FPS = 30


def write_video(path: str, frames: Sequence[np.ndarray], fps: float = FPS) -> str:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path} with mp4v")
    for frame in frames:
        writer.write(frame)
    writer.release()
    return str(path)


def _linear(start: Tuple[float, float], end: Tuple[float, float], first: int, last: int) -> Callable[[int], Tuple[float, float]]:
    """Centre moving at constant speed from `start` (frame `first`) to `end` (frame `last`)."""
    def center(frame: int) -> Tuple[float, float]:
        t = (frame - first) / max(1, last - first)
        return start[0] + t * (end[0] - start[0]), start[1] + t * (end[1] - start[1])
    return center


# Objects of the tracking video, one lane each so they never overlap:
# the circle crosses the whole video, the square enters at frame 21 and leaves after frame 70,
# the triangle is hidden for frames 36-45 (a gap a tracker should bridge with its default buffer).
TRACKING_OBJECTS = (
    {"name": "circle", "label": "circle", "size": 52, "visible": [(1, 90)],
     "center": _linear((50, 48), (270, 48), 1, 90)},
    {"name": "triangle", "label": "triangle", "size": 60, "visible": [(1, 35), (46, 90)],
     "center": _linear((250, 120), (110, 120), 1, 90)},
    {"name": "square", "label": "square", "size": 48, "visible": [(21, 70)],
     "center": _linear((70, 192), (230, 192), 21, 70)},
)
TRACKING_GAP = (36, 45)


def _visible(spans, frame: int) -> bool:
    return any(a <= frame <= b for a, b in spans)


def _xyxy(polygon: np.ndarray, width: int, height: int) -> Tuple[float, float, float, float]:
    x1, y1 = polygon.min(axis=0)
    x2, y2 = polygon.max(axis=0)
    return max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2)


def tracking_video(path: str, frames: int = 90, width: int = 320, height: int = 240, seed: int = 1_000_100,
                   objects=TRACKING_OBJECTS) -> Dict[str, dict]:
    """Moving shapes on a noisy background. Returns `{name: {"label", "boxes": {frame: xyxy}}}`
    with a box for every frame where the object is visible."""
    rng = np.random.default_rng(seed)
    base = synthetic.background(rng, width, height)
    truth = {o["name"]: {"label": o["label"], "boxes": {}} for o in objects}
    images = []
    for frame in range(1, frames + 1):
        image = np.clip(base.astype(np.int16) + rng.normal(0, 3, base.shape).astype(np.int16), 0, 255).astype(np.uint8)
        for o in objects:
            if not _visible(o["visible"], frame):
                continue
            angle = 0.0 if o["label"] == "circle" else 0.5 * frame
            polygon = synthetic.draw_shape(image, o["label"], o["center"](frame), o["size"], angle)
            truth[o["name"]]["boxes"][frame] = _xyxy(polygon, width, height)
        images.append(image)
    write_video(path, images)
    return truth


def timeline_video(path: str, segments: Sequence[Tuple[Optional[str], int]], size: int = 160,
                   seed: int = 1_000_200) -> Dict[str, List[int]]:
    """One shape per frame on a fixed background: `segments` = [(label or None, number of frames)].

    Returns `{label: [1-based frames showing it]}`. The shape drifts and turns slowly, like an
    object filmed for a while.
    """
    rng = np.random.default_rng(seed)
    base = synthetic.background(rng, size, size)
    truth: Dict[str, List[int]] = {}
    images = []
    frame = 0
    for label, count in segments:
        start_center = rng.uniform(0.4, 0.6, size=2) * size
        drift = rng.uniform(-0.3, 0.3, size=2)
        extent = rng.uniform(0.40, 0.50) * size
        for i in range(count):
            frame += 1
            image = np.clip(base.astype(np.int16) + rng.normal(0, 3, base.shape).astype(np.int16), 0, 255).astype(np.uint8)
            if label is not None:
                angle = 0.0 if label == "circle" else 2.0 * i
                synthetic.draw_shape(image, label, start_center + drift * i, extent, angle)
                truth.setdefault(label, []).append(frame)
            images.append(image)
    write_video(path, images)
    return truth


def zidane_pan_video(path: str, frames: int = 24, crop: Tuple[int, int] = (880, 495),
                     out_size: Tuple[int, int] = (480, 270)) -> str:
    """A camera pan over Ultralytics' assets/zidane.jpg (two people): a crop window sliding
    left to right, resized, one crop per frame."""
    import ultralytics

    image = cv2.imread(os.path.join(os.path.dirname(ultralytics.__file__), "assets", "zidane.jpg"))
    height, width = image.shape[:2]
    cw, ch = crop
    images = []
    for i in range(frames):
        x = int(round(i * (width - cw) / max(1, frames - 1)))
        y = (height - ch) // 2
        images.append(cv2.resize(image[y:y + ch, x:x + cw], out_size, interpolation=cv2.INTER_AREA))
    return write_video(path, images)


def not_a_video(path: str) -> str:
    with open(path, "wb") as f:
        f.write(b"this is not a video\n" * 100)
    return str(path)

"""Multi-object tracking: Ultralytics trackers built from a config we assemble, and tracks -> regions.

The tracker config is assembled in memory, never written to a file:
1. Ultralytics' own bundled YAML of the tracker type (`ultralytics/cfg/trackers/<type>.yaml`), so
   every key the installed Ultralytics expects is there (stale copies of these YAMLs failed with
   "'IterableSimpleNamespace' object has no attribute ..." after Ultralytics upgrades);
2. on top, a YAML of the same name in MODEL_ROOT if there is one (a user file wins by name; it may
   name another `tracker_type`, whose bundled defaults are then the base);
3. on top, the control tag's `<tracker>_<param>` attributes, typed like the value they replace.

The caller runs the detector on batches of frames and feeds the tracker one frame at a time,
which is what `model.track()` does internally, minus its one-frame-per-call limit.
"""

import inspect
import logging
import os
from collections import Counter, defaultdict
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np
import yaml

from label_studio_ml.exceptions import LabelConfigError
from label_studio_ml.parsing import parse_bool
from utils.detections import Target
from utils.weights import resolve_in_root

logger = logging.getLogger(__name__)

YAML_SUFFIXES = (".yaml", ".yml")
# Keys the control tag may not override: they select the tracker rather than tune it.
FIXED_KEYS = ("tracker_type",)


def bundled_trackers_dir() -> str:
    import ultralytics

    return os.path.join(os.path.dirname(ultralytics.__file__), "cfg", "trackers")


def bundled_tracker_config(tracker_type: str) -> Optional[dict]:
    """The installed Ultralytics' default config of `tracker_type`, None if it has none."""
    path = os.path.join(bundled_trackers_dir(), f"{tracker_type}.yaml")
    return load_tracker_yaml(path) if os.path.isfile(path) else None


def bundled_tracker_names() -> List[str]:
    return sorted(os.path.splitext(n)[0] for n in os.listdir(bundled_trackers_dir()) if n.endswith(".yaml"))


def load_tracker_yaml(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise LabelConfigError(f"Tracker config {os.path.basename(path)} cannot be read: {exc}") from exc
    if not isinstance(data, dict):
        raise LabelConfigError(f"Tracker config {os.path.basename(path)} must be a mapping of parameters")
    return data


def user_tracker_path(name: str, root: str) -> Optional[str]:
    """`<name>.yaml` (or `.yml`) in `root` (MODEL_ROOT), if present."""
    for suffix in YAML_SUFFIXES:
        path = resolve_in_root(name + suffix, root, "model_tracker")
        if os.path.isfile(path):
            return path
    return None


def typed_value(key: str, raw, default):
    """`raw` (a config attribute, i.e. a string) converted to the type of the default value."""
    try:
        if isinstance(default, bool):
            return parse_bool(raw, default)
        if isinstance(default, int):
            number = float(raw)
            if number != int(number):
                raise ValueError("not an integer")
            return int(number)
        if isinstance(default, float):
            return float(raw)
        if default is None:
            return yaml.safe_load(str(raw))
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise LabelConfigError(f"{key}={raw!r}: expected {type(default).__name__} like the default {default!r} ({exc})")


def tracker_config(name: str, attrs: Dict[str, str], root: str) -> dict:
    """The full config of tracker `name` (see the module docstring for the layers); `root` is
    MODEL_ROOT.

    `attrs` are the control tag's attributes; those prefixed `<name>_` or `<tracker_type>_` are
    overrides, and an unknown parameter after such a prefix is a config error listing the valid ones.
    """
    if not isinstance(name, str) or not name.strip():
        raise LabelConfigError("model_tracker is empty")
    name = name.strip()
    user_path = user_tracker_path(name, root)
    user = load_tracker_yaml(user_path) if user_path else {}
    tracker_type = str(user.get("tracker_type") or name)
    base = bundled_tracker_config(tracker_type)
    if base is None:
        if user_path:
            raise LabelConfigError(f"{os.path.basename(user_path)}: tracker_type {tracker_type!r} is not an Ultralytics "
                                   f"tracker ({', '.join(bundled_tracker_names())})")
        raise LabelConfigError(f"model_tracker={name!r}: neither an Ultralytics tracker "
                               f"({', '.join(bundled_tracker_names())}) nor a {name}.yaml in MODEL_ROOT")
    config = {**base, **user, "tracker_type": tracker_type}
    if user_path:
        logger.debug("Tracker %s: %s over Ultralytics' %s defaults", name, user_path, tracker_type)

    tunable = sorted(k for k in config if k not in FIXED_KEYS)
    prefixes = sorted({name, tracker_type}, key=len, reverse=True)  # the longest prefix claims an attribute
    for attr, raw in attrs.items():
        prefix = next((p for p in prefixes if attr.startswith(p + "_")), None)
        if prefix is None:
            continue
        key = attr[len(prefix) + 1:]
        if key not in tunable:
            raise LabelConfigError(f"{attr}: tracker {name!r} has no parameter {key!r}; valid: "
                                   + ", ".join(f"{prefix}_{k}" for k in tunable))
        config[key] = typed_value(attr, raw, config[key])

    tracker_class(tracker_type)  # every config error surfaces before a video is decoded
    if config.get("with_reid"):
        model = str(config.get("model", "auto"))
        if model == "auto":
            raise LabelConfigError(f"{name}: with_reid needs model=<ReID weights in MODEL_ROOT>; the 'auto' detector "
                                   "features exist only inside Ultralytics' own track mode")
        config["model"] = resolve_in_root(model, root, f"{name} ReID model")
    return config


def tracker_class(tracker_type: str):
    """The Ultralytics tracker class of `tracker_type`, if it can be fed detections by us.

    Some trackers hook into Ultralytics' predictor (`setup_predictor`, `compute_frame_extras`):
    they only run inside `model.track()`.
    """
    from ultralytics.trackers.track import TRACKER_MAP

    def standalone(cls) -> bool:
        return not any(hasattr(cls, hook) for hook in ("setup_predictor", "compute_frame_extras"))

    cls = TRACKER_MAP.get(tracker_type)
    if cls is None or not standalone(cls):
        usable = sorted(t for t, c in TRACKER_MAP.items() if standalone(c))
        raise LabelConfigError(f"Tracker type {tracker_type!r} is not supported here; use one of {', '.join(usable)}")
    return cls


def build_tracker(config: dict, fps: float, device: Optional[str] = None):
    """A fresh Ultralytics tracker for one video, from a config made by `tracker_config`."""
    from ultralytics.utils import IterableSimpleNamespace

    cls = tracker_class(config["tracker_type"])
    kwargs = {}
    if "frame_rate" in inspect.signature(cls.__init__).parameters:
        kwargs["frame_rate"] = max(1, int(round(fps)))  # older Ultralytics scale track_buffer by FPS / 30
    return cls(args=IterableSimpleNamespace(**config, device=device), **kwargs)


# ----- tracks -> Label Studio regions (pure) -----------------------------------------------------

def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box with each row of `boxes`."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    union = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


class TrackCollector:
    """Boxes of every track, frame by frame: `tracks[id] = [(frame, x1, y1, x2, y2, score, cls), ...]`.

    Ultralytics' trackers report a track that starts after the first frame only from its second
    match on: the detection that started it, one frame earlier, would be lost. So the collector
    remembers the previous frame's detections that no track reported, and gives a track that
    appears for the first time the best-overlapping one of them (same class, IoU >= 0.3).
    """

    FIRST_BOX_MIN_IOU = 0.3

    def __init__(self):
        self.tracks: Dict[int, List[Tuple]] = defaultdict(list)
        self._previous: Optional[Tuple[int, np.ndarray]] = None  # (frame, unreported detections)

    def add(self, frame: int, rows: np.ndarray, detections: Optional[np.ndarray] = None) -> None:
        """`rows`: a tracker's output `[x1, y1, x2, y2, track_id, score, cls, idx]` for 1-based `frame`;
        `detections`: the detector's `[x1, y1, x2, y2, score, cls]` rows of that frame.

        With `detections` each track gets the box of the detection it matched rather than the
        tracker's Kalman-smoothed one, which lags behind motion, and new tracks get their first box.
        """
        detections = None if detections is None else np.asarray(detections, dtype=float).reshape(-1, 6)
        reported = set()
        for row in np.asarray(rows, dtype=float).reshape(-1, 8):
            x1, y1, x2, y2, track_id, score, cls, idx = row
            track_id, idx = int(track_id), int(idx)
            if detections is not None and 0 <= idx < len(detections):
                x1, y1, x2, y2 = (float(v) for v in detections[idx, :4])
                reported.add(idx)
            if track_id not in self.tracks:
                self._add_first_box(track_id, frame, np.array([x1, y1, x2, y2]), int(cls))
            self.tracks[track_id].append((frame, x1, y1, x2, y2, float(score), int(cls)))
        if detections is not None:
            unreported = [i for i in range(len(detections)) if i not in reported]
            self._previous = (frame, detections[unreported])

    def _add_first_box(self, track_id: int, frame: int, box: np.ndarray, cls: int) -> None:
        if self._previous is None or self._previous[0] != frame - 1:
            return
        unreported = self._previous[1]
        same_class = np.flatnonzero(unreported[:, 5] == cls)
        if not len(same_class):
            return
        overlaps = _iou(box, unreported[same_class, :4])
        if overlaps.max() < self.FIRST_BOX_MIN_IOU:
            return
        best = same_class[int(np.argmax(overlaps))]
        x1, y1, x2, y2, score, _ = (float(v) for v in unreported[best])
        self.tracks[track_id].append((frame - 1, x1, y1, x2, y2, score, cls))
        self._previous = (frame - 1, np.delete(unreported, best, axis=0))  # one detection starts one track


def lifespan_sequence(boxes: List[dict]) -> List[dict]:
    """Sort by frame; `enabled` is False on the last box before a gap and on the very last box,
    which is how Label Studio ends an object's lifespan (it interpolates between enabled boxes)."""
    boxes = sorted(boxes, key=lambda b: b["frame"])
    for current, following in zip(boxes, boxes[1:]):
        current["enabled"] = following["frame"] - current["frame"] <= 1
    if boxes:
        boxes[-1]["enabled"] = False
    return boxes


def track_label(classes: Iterable[int], names: Dict[int, str], label_map: Dict[str, str]) -> Optional[str]:
    """The label of the track's most frequent mapped class (None if none of its classes maps)."""
    counts = Counter(label_map[names[c]] for c in classes if names.get(c) in label_map)
    return counts.most_common(1)[0][0] if counts else None


def track_regions(tracks: Dict[int, List[Tuple]], names: Dict[int, str], label_map: Dict[str, str],
                  target: Target, frames_count: int, duration: float) -> List[dict]:
    """One `videorectangle` region per track, in order of first appearance (`target`: the video's size)."""
    regions = []
    step = duration / frames_count if frames_count else 0.0
    for track_id, rows in sorted(tracks.items(), key=lambda item: (min(r[0] for r in item[1]), item[0])):
        label = track_label((r[6] for r in rows), names, label_map)
        if label is None:
            continue
        sequence = lifespan_sequence([
            {"frame": int(frame), "enabled": True, "rotation": 0, **target.percent_box(x1, y1, x2, y2),
             "time": frame * step, "score": score}
            for frame, x1, y1, x2, y2, score, _ in rows
        ])
        value = {"framesCount": int(frames_count), "duration": float(duration), "sequence": sequence, "labels": [label]}
        regions.append(target.region("videorectangle", value, max(box["score"] for box in sequence),
                                     id=f"{target.from_name}-track-{track_id}"))
    return regions

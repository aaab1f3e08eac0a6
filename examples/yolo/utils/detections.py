"""The one interchange type between Ultralytics results and Label Studio regions.

`Detections` holds a model's objects on one image as plain numpy arrays (boxes, oriented-box
corners, instance outlines, keypoints, class ids, scores), built once from an Ultralytics result by
`Detections.from_ultralytics`, or directly from arrays (tests, annotations read back from Label
Studio). Like supervision's type of the same name it is indexed by a boolean mask or index array,
so every filter is one expression (`dets[dets.scores >= 0.5]`) and the converters in
`utils.converters` only turn each kept object into JSON.

`Target` is where the regions go: the control and object tag names and the image size that
pixel coordinates become percentages of.
"""

from dataclasses import dataclass, field, fields, replace
from typing import Dict, List, Mapping, Optional

import numpy as np


@dataclass(frozen=True)
class Target:
    """The control tag (`from_name`) and object tag (`to_name`) a region belongs to, and the
    width and height in pixels of the image as Label Studio shows it."""

    from_name: str
    to_name: str
    width: int
    height: int

    def region(self, kind: str, value: dict, score: float, **extra) -> dict:
        """A Label Studio region of type `kind` (e.g. "rectanglelabels"); `extra` adds top-level keys."""
        region = {"from_name": self.from_name, "to_name": self.to_name, "type": kind, "value": value,
                  "score": float(score)}
        region.update(extra)
        return region

    def percent_point(self, x, y) -> tuple:
        """Pixel `(x, y)` as percentages of the image width and height."""
        return x / self.width * 100, y / self.height * 100

    def percent_box(self, x1, y1, x2, y2) -> dict:
        """A pixel box (corners) as Label Studio's `x`, `y` (top-left), `width`, `height` in percent."""
        x, y = self.percent_point(x1, y1)
        return {"x": x, "y": y, "width": (x2 - x1) / self.width * 100, "height": (y2 - y1) / self.height * 100}


def _numpy(values) -> np.ndarray:
    """A numpy copy of an Ultralytics tensor property. Properties (corners of oriented boxes...)
    are computed by Ultralytics on the tensor, then copied: computing them in numpy rounds differently."""
    return values.cpu().numpy() if hasattr(values, "cpu") else np.asarray(values)


def _floats(values, shape: Optional[tuple] = None) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    return array.reshape(shape) if shape is not None else array


@dataclass(frozen=True)
class Detections:
    """N objects found on one image. Pixel coordinates of the image as Label Studio shows it.

    `scores` keep the model's dtype, so thresholds compare exactly as they always did. Geometry
    fields are None when the model does not produce them (a detector has no keypoints, a
    classifier no boxes). `labels`, set by `labelled`, is the Label Studio label of each object.
    """

    class_ids: np.ndarray                             # (N,) int
    scores: np.ndarray                                # (N,)
    names: Mapping[int, str] = field(default_factory=dict)  # the model's class names
    xyxy: Optional[np.ndarray] = None                 # (N, 4) box corners x1, y1, x2, y2
    corners: Optional[np.ndarray] = None              # (N, 4, 2) oriented-box corners
    polygons: Optional[List[np.ndarray]] = None       # N instance outlines, each (K, 2)
    keypoints: Optional[np.ndarray] = None            # (N, K, 2)
    keypoint_scores: Optional[np.ndarray] = None      # (N, K)
    labels: Optional[np.ndarray] = None               # (N,) str, see `labelled`

    def __post_init__(self):
        # Frozen: the arrays are normalised here, once, so every consumer sees the same types.
        count = len(np.asarray(self.class_ids).reshape(-1))
        normalised = {
            "class_ids": np.asarray(self.class_ids).reshape(count).astype(int),
            "scores": np.asarray(self.scores).reshape(count),
            "xyxy": None if self.xyxy is None else _floats(self.xyxy, (count, 4)),
            "corners": None if self.corners is None else _floats(self.corners, (count, 4, 2)),
            "polygons": None if self.polygons is None else [_floats(p, (-1, 2)) for p in self.polygons],
            "keypoints": None if self.keypoints is None else _floats(self.keypoints),
            "keypoint_scores": None if self.keypoint_scores is None else np.asarray(self.keypoint_scores),
            "labels": None if self.labels is None else np.array(list(self.labels), dtype=object).reshape(count),
        }
        for name, value in normalised.items():
            object.__setattr__(self, name, value)
        for name in ("polygons", "keypoints", "keypoint_scores", "labels"):
            value = getattr(self, name)
            if value is not None and len(value) != count:
                raise ValueError(f"Detections: {len(value)} {name} for {count} objects")

    @classmethod
    def from_ultralytics(cls, result) -> "Detections":
        """Everything one Ultralytics result holds per object (detect, segment, pose, obb).

        A classification result becomes one whole-image candidate per class (score = its
        probability, no geometry), so `labelled` selects choices like it selects boxes.
        """
        names = dict(result.names)
        if result.probs is not None:
            probs = np.asarray(_numpy(result.probs.data), dtype=float)
            return cls(class_ids=np.arange(len(probs)), scores=probs, names=names)
        if result.obb is not None:
            obb = result.obb
            return cls(class_ids=_numpy(obb.cls), scores=_numpy(obb.conf), names=names, xyxy=_numpy(obb.xyxy),
                       corners=_numpy(obb.xyxyxyxy))
        boxes = result.boxes
        polygons = keypoints = keypoint_scores = None
        if result.masks is not None:
            polygons = result.masks.xy
        if result.keypoints is not None and len(boxes):
            keypoints = _numpy(result.keypoints.xy)
            keypoint_scores = None if result.keypoints.conf is None else _numpy(result.keypoints.conf)
        return cls(class_ids=_numpy(boxes.cls), scores=_numpy(boxes.conf), names=names, xyxy=_numpy(boxes.xyxy),
                   polygons=polygons, keypoints=keypoints, keypoint_scores=keypoint_scores)

    def __len__(self) -> int:
        return len(self.class_ids)

    def __getitem__(self, index) -> "Detections":
        """The objects selected by a boolean mask, an index array, a slice or an int (order kept)."""
        positions = np.arange(len(self))[index].reshape(-1)
        picked = {}
        for spec in fields(self):
            value = getattr(self, spec.name)
            if value is None or spec.name == "names":
                continue
            picked[spec.name] = [value[i] for i in positions] if spec.name == "polygons" else value[positions]
        return replace(self, **picked)

    @property
    def class_names(self) -> List[str]:
        """The model's name of each object's class (its id as text when the model has no name for it)."""
        return [self.names.get(int(c), str(int(c))) for c in self.class_ids]

    def labelled(self, label_map: Dict[str, str], threshold: float) -> "Detections":
        """The objects whose class maps to a label (`label_map`: model class name -> label) and whose
        score reaches `threshold`, with `labels` set."""
        labels = [label_map.get(name) for name in self.class_names]
        keep = np.array([label is not None for label in labels], dtype=bool) & (self.scores >= threshold)
        return replace(self, labels=labels)[keep]

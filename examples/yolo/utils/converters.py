"""Pure functions: `Detections` -> Label Studio regions, one function per region type.

No model and no I/O here, so every rule is tested on hand-made arrays. The objects come in
already selected (`Detections.labelled`: mapped to a label and above the threshold), in pixels of
the image as Label Studio shows it; the `Target` names the tags and turns pixels into percent.
"""

from dataclasses import replace
from typing import Dict, List, Optional

import cv2
import numpy as np
from label_studio_sdk.converter.brush import mask2rle
from label_studio_sdk.converter.utils import convert_yolo_obb_to_annotation

from utils.detections import Detections, Target


def _labels(dets: Detections) -> list:
    if dets.labels is None:
        raise ValueError("Converters take labelled detections: call Detections.labelled(label_map, threshold) first")
    return list(dets.labels)


def to_rectangles(dets: Detections, target: Target) -> List[dict]:
    """Axis-aligned boxes -> `rectanglelabels` (x/y = top-left corner, percent)."""
    return [target.region("rectanglelabels", {"rectanglelabels": [label], **target.percent_box(*box)}, score)
            for box, score, label in zip(dets.xyxy, dets.scores, _labels(dets))]


def to_oriented_rectangles(dets: Detections, target: Target) -> List[dict]:
    """Oriented boxes (corner pixels) -> rotated `rectanglelabels`, via the SDK's converter."""
    regions = []
    for corners, score, label in zip(dets.corners, dets.scores, _labels(dets)):
        box = convert_yolo_obb_to_annotation(corners.reshape(-1).tolist(), target.width, target.height)
        value = {"rectanglelabels": [label], "x": box["x"], "y": box["y"], "width": box["width"],
                 "height": box["height"], "rotation": box["rotation"] % 360}
        regions.append(target.region("rectanglelabels", value, score, original_width=int(target.width),
                                     original_height=int(target.height)))
    return regions


def to_polygons(dets: Detections, target: Target) -> List[dict]:
    """Instance outlines -> closed `polygonlabels` (outlines of fewer than 3 points are dropped)."""
    regions = []
    for polygon, score, label in zip(dets.polygons or [], dets.scores, _labels(dets)):
        if len(polygon) < 3:
            continue
        points = [[float(v) for v in target.percent_point(x, y)] for x, y in polygon]
        regions.append(target.region("polygonlabels", {"polygonlabels": [label], "points": points, "closed": True},
                                     score))
    return regions


def polygon_mask(polygon, width: int, height: int) -> np.ndarray:
    """Filled uint8 mask (0/1) of a pixel polygon at full image size."""
    mask = np.zeros((int(height), int(width)), dtype=np.uint8)
    points = np.round(np.asarray(polygon, float).reshape(-1, 2)).astype(np.int32)
    if len(points) >= 3:
        cv2.fillPoly(mask, [points], 1)
    return mask


def to_brushes(dets: Detections, target: Target) -> List[dict]:
    """Instance outlines -> `brushlabels` masks in Label Studio's RLE (one region per instance)."""
    regions = []
    for polygon, score, label in zip(dets.polygons or [], dets.scores, _labels(dets)):
        mask = polygon_mask(polygon, target.width, target.height)
        if not mask.any():
            continue
        value = {"format": "rle", "rle": mask2rle(mask * 255), "brushlabels": [label]}
        regions.append(target.region("brushlabels", value, score, original_width=int(target.width),
                                     original_height=int(target.height), image_rotation=0))
    return regions


def to_choices(dets: Detections, target: Target, mode: str = "single", kind: str = "choices",
               paths: Optional[Dict[str, List[str]]] = None) -> List[dict]:
    """Classes (one candidate per class, see `Detections.from_ultralytics`) -> one `choices` or
    `taxonomy` region.

    `mode` "single"/"single-radio": the most probable label; "multiple": every label. A label
    mapped from several classes takes its most probable one. Score = mean probability of the
    chosen labels. For Taxonomy, `paths` gives each label's path from the root (`[["Animal", "Cat"]]`).
    """
    labels = _labels(dets)
    chosen: Dict[str, float] = {}  # label -> probability, most probable first
    for i in np.argsort(-dets.scores, kind="stable"):
        chosen.setdefault(labels[i], float(dets.scores[i]))
    if mode != "multiple":
        chosen = dict(list(chosen.items())[:1])
    if not chosen:
        return []
    value = ({"taxonomy": [(paths or {}).get(label, [label]) for label in chosen]} if kind == "taxonomy"
             else {"choices": list(chosen)})
    return [target.region(kind, value, float(np.mean(list(chosen.values()))))]


def to_keypoints(dets: Detections, target: Target, point_map: Dict[str, str], point_threshold: float = 0.0,
                 add_bboxes: bool = True, point_size: float = 1.0) -> List[dict]:
    """Pose objects -> `keypointlabels`, grouped under a hidden parent box `bbox-<i>` per object.

    `point_map` maps `"<model class>::<keypoint index>"` to a label; keypoints without a label or
    below `point_threshold` are dropped, and so are objects left without a keypoint. The caller
    selects the objects (score threshold); their parent boxes keep the model's class names.
    """
    regions = []
    box_target = replace(target, from_name=f"{target.from_name}_bbox")
    for i, class_name in enumerate(dets.class_names):
        parent = f"bbox-{i}"
        points = []
        for k, (x, y) in enumerate(dets.keypoints[i]):
            label = point_map.get(f"{class_name}::{k}")
            confidence = float(dets.keypoint_scores[i][k] if dets.keypoint_scores is not None else dets.scores[i])
            if label is None or confidence < point_threshold:
                continue
            x_percent, y_percent = target.percent_point(x, y)
            value = {"keypointlabels": [label], "x": x_percent, "y": y_percent, "width": point_size / target.width * 100}
            extra = {"meta": {"text": [parent]}}
            if add_bboxes:
                extra["parentID"] = parent
            points.append(target.region("keypointlabels", value, confidence, **extra))
        if not points:
            continue
        if add_bboxes:
            value = {"rectanglelabels": [class_name], **box_target.percent_box(*dets.xyxy[i])}
            regions.append(box_target.region("rectanglelabels", value, dets.scores[i], id=parent, hidden=True,
                                             meta={"text": [parent]}))
        regions.extend(points)
    return regions

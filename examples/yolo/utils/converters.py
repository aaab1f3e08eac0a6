"""Pure functions: Ultralytics outputs (numpy arrays) -> Label Studio regions.

No model and no I/O here, so every rule (thresholds, label mapping, percent coordinates) is
tested on hand-made arrays. Coordinates in are pixels of the image as Label Studio shows it;
coordinates out are percentages of its width and height.
"""

from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np
from label_studio_sdk.converter.brush import mask2rle
from label_studio_sdk.converter.utils import convert_yolo_obb_to_annotation


def _region(from_name: str, to_name: str, kind: str, value: dict, score: float, **extra) -> dict:
    region = {"from_name": from_name, "to_name": to_name, "type": kind, "value": value, "score": float(score)}
    region.update(extra)
    return region


def _mapped(class_id, names: Dict[int, str], label_map: Dict[str, str]) -> Optional[str]:
    return label_map.get(names.get(int(class_id), str(int(class_id))))


def rectangle_regions(xyxy, scores, classes, names, label_map, width, height, threshold, from_name, to_name) -> List[dict]:
    """Axis-aligned boxes -> `rectanglelabels` (x/y = top-left corner, percent)."""
    regions = []
    for (x1, y1, x2, y2), score, cls in zip(np.asarray(xyxy, float), scores, classes):
        label = _mapped(cls, names, label_map)
        if label is None or score < threshold:
            continue
        value = {
            "rectanglelabels": [label],
            "x": x1 / width * 100, "y": y1 / height * 100,
            "width": (x2 - x1) / width * 100, "height": (y2 - y1) / height * 100,
        }
        regions.append(_region(from_name, to_name, "rectanglelabels", value, score))
    return regions


def oriented_rectangle_regions(corners, scores, classes, names, label_map, width, height, threshold, from_name, to_name) -> List[dict]:
    """Oriented boxes (N x 4 x 2 corner pixels) -> rotated `rectanglelabels`, via the SDK's converter."""
    regions = []
    for points, score, cls in zip(np.asarray(corners, float), scores, classes):
        label = _mapped(cls, names, label_map)
        if label is None or score < threshold:
            continue
        box = convert_yolo_obb_to_annotation(points.reshape(-1).tolist(), width, height)
        value = {"rectanglelabels": [label], "x": box["x"], "y": box["y"], "width": box["width"],
                 "height": box["height"], "rotation": box["rotation"] % 360}
        regions.append(_region(from_name, to_name, "rectanglelabels", value, score,
                               original_width=int(width), original_height=int(height)))
    return regions


def polygon_regions(polygons: Sequence, scores, classes, names, label_map, width, height, threshold, from_name, to_name) -> List[dict]:
    """Instance outlines (list of K x 2 pixel arrays) -> closed `polygonlabels`."""
    regions = []
    for polygon, score, cls in zip(polygons, scores, classes):
        label = _mapped(cls, names, label_map)
        polygon = np.asarray(polygon, float).reshape(-1, 2)
        if label is None or score < threshold or len(polygon) < 3:
            continue
        points = [[float(x / width * 100), float(y / height * 100)] for x, y in polygon]
        regions.append(_region(from_name, to_name, "polygonlabels",
                               {"polygonlabels": [label], "points": points, "closed": True}, score))
    return regions


def polygon_mask(polygon, width: int, height: int) -> np.ndarray:
    """Filled uint8 mask (0/1) of a pixel polygon at full image size."""
    mask = np.zeros((int(height), int(width)), dtype=np.uint8)
    points = np.round(np.asarray(polygon, float).reshape(-1, 2)).astype(np.int32)
    if len(points) >= 3:
        cv2.fillPoly(mask, [points], 1)
    return mask


def brush_regions(polygons: Sequence, scores, classes, names, label_map, width, height, threshold, from_name, to_name) -> List[dict]:
    """Instance outlines -> `brushlabels` masks in Label Studio's RLE (one region per instance)."""
    regions = []
    for polygon, score, cls in zip(polygons, scores, classes):
        label = _mapped(cls, names, label_map)
        if label is None or score < threshold:
            continue
        mask = polygon_mask(polygon, width, height)
        if not mask.any():
            continue
        value = {"format": "rle", "rle": mask2rle(mask * 255), "brushlabels": [label]}
        regions.append(_region(from_name, to_name, "brushlabels", value, score, original_width=int(width),
                               original_height=int(height), image_rotation=0))
    return regions


def choice_regions(probs, names, label_map, threshold, mode, from_name, to_name, kind="choices",
                   paths: Optional[Dict[str, List[str]]] = None) -> List[dict]:
    """Class probabilities -> one `choices` (or `taxonomy`) region.

    `mode` "single"/"single-radio": the most probable *mapped* class, if it reaches the threshold;
    "multiple": every mapped class at or above it. Score = mean probability of the chosen labels.
    For Taxonomy, `paths` gives each label's path from the root (`[["Animal", "Cat"]]`).
    """
    probs = np.asarray(probs, float)
    candidates = []  # (probability, label), first class wins for a label mapped twice
    seen = set()
    for class_id in np.argsort(-probs, kind="stable"):
        label = _mapped(class_id, names, label_map)
        if label is not None and label not in seen:
            seen.add(label)
            candidates.append((float(probs[class_id]), label))
    chosen = [c for c in candidates if c[0] >= threshold]
    if mode != "multiple":
        chosen = chosen[:1]
    if not chosen:
        return []
    labels = [label for _, label in chosen]
    value = {"taxonomy": [(paths or {}).get(l, [l]) for l in labels]} if kind == "taxonomy" else {"choices": labels}
    return [_region(from_name, to_name, kind, value, float(np.mean([p for p, _ in chosen])))]


def keypoint_regions(boxes, box_scores, box_classes, keypoints, keypoint_scores, names, point_map, width, height,
                     score_threshold, point_threshold, add_bboxes, point_size, from_name, to_name) -> List[dict]:
    """Pose results -> `keypointlabels`, grouped under a hidden parent box per detected object.

    `point_map` maps `"<model class>::<keypoint index>"` to a label; keypoints without a label,
    below `point_threshold`, or of objects below `score_threshold` are dropped.
    """
    regions = []
    keypoints = np.asarray(keypoints, float)
    for i, (box, score, cls) in enumerate(zip(np.asarray(boxes, float), box_scores, box_classes)):
        if score < score_threshold:
            continue
        class_name = names.get(int(cls), str(int(cls)))
        parent = f"bbox-{i}"
        points = []
        for k, (x, y) in enumerate(keypoints[i]):
            label = point_map.get(f"{class_name}::{k}")
            confidence = float(keypoint_scores[i][k]) if keypoint_scores is not None else float(score)
            if label is None or confidence < point_threshold:
                continue
            value = {"keypointlabels": [label], "x": x / width * 100, "y": y / height * 100,
                     "width": point_size / width * 100}
            extra = {"meta": {"text": [parent]}}
            if add_bboxes:
                extra["parentID"] = parent
            points.append(_region(from_name, to_name, "keypointlabels", value, confidence, **extra))
        if not points:
            continue
        if add_bboxes:
            x1, y1, x2, y2 = box
            value = {"rectanglelabels": [class_name], "x": x1 / width * 100, "y": y1 / height * 100,
                     "width": (x2 - x1) / width * 100, "height": (y2 - y1) / height * 100}
            regions.append(_region(f"{from_name}_bbox", to_name, "rectanglelabels", value, score,
                                   id=parent, hidden=True, meta={"text": [parent]}))
        regions.extend(points)
    return regions

"""Label Studio annotations -> an Ultralytics dataset on disk, for one control tag.

Tasks are dicts as Label Studio's API returns them (`id`, `data`, `annotations`). Per task one
annotation counts (`choose_annotation`); its regions of the tag become one label file (detect,
obb, segment, pose) or one class folder entry (classify). Coordinates in Label Studio are percent
of the image as shown, so labels need no image size, except brush masks (RLE in the region's
`original_width` x `original_height`) and rotated boxes (the rotation is in pixels).

Media access is the caller's: `media(task) -> local image path`; whatever it raises skips the
task (counted with its reason), so one missing file never fails a training.
"""

import hashlib
import logging
import os
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

logger = logging.getLogger(__name__)

TASKS = ("detect", "obb", "segment", "classify", "pose")
VAL_FRACTION = 0.2
DEFAULT_MIN_TASKS = 10

# Pillow format -> file extension Ultralytics reads (it picks images by extension).
IMAGE_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif", "MPO": ".mpo"}
EXIF_ORIENTATION = 0x0112
EXIF_TRANSPOSED = (5, 6, 7, 8)  # orientations shown with width and height swapped


class CannotTrain(Exception):
    """Training cannot start; the message says why (shown in the job's result)."""


class Unusable(ValueError):
    """A region (counted per reason, its task kept) or a task (skipped) that cannot be learnt from."""


@dataclass(frozen=True)
class TrainableTag:
    """What one control tag learns.

    `labels` are the classes, in config order (pose: the classes of the parent boxes; with one
    class every parent box is that class). `keypoints` (pose) are the keypoint labels in model
    order (`keypoint_order`)."""

    from_name: str
    task: str
    labels: Tuple[str, ...]
    keypoints: Tuple[str, ...] = ()

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"unknown Ultralytics task {self.task!r}; one of {TASKS}")
        if not self.labels:
            raise CannotTrain(f"control tag '{self.from_name}' has no labels to learn")
        if self.task == "pose" and not self.keypoints:
            raise CannotTrain(f"KeyPointLabels '{self.from_name}' has no keypoint labels to learn")


@dataclass
class Dataset:
    """A dataset written for Ultralytics: `data` is what `YOLO.train(data=...)` takes; `names`
    the trained model's classes (the tag's labels in config order; classification: sorted, as
    Ultralytics orders class folders)."""

    root: str
    data: str
    task: str
    names: Tuple[str, ...]
    train_ids: List[int]
    val_ids: List[int]
    skipped: Dict[str, str] = field(default_factory=dict)  # task id -> why
    ignored_regions: Dict[str, int] = field(default_factory=dict)  # why -> how many

    def summary(self) -> dict:
        return {"train_tasks": len(self.train_ids), "val_tasks": len(self.val_ids),
                "skipped_tasks": len(self.skipped), "skipped": dict(self.skipped),
                "ignored_regions": dict(self.ignored_regions)}


# ----- which annotation, which split ----------------------------------------------------------------

def _timestamp(annotation: dict) -> float:
    text = annotation.get("updated_at") or annotation.get("created_at")
    try:
        return datetime.fromisoformat(str(text)).timestamp()
    except (TypeError, ValueError):
        return float("-inf")


def choose_annotation(task: dict) -> Optional[dict]:
    """The annotation that teaches: cancelled (skipped) ones never; a ground truth before the
    others; else the most recently updated (then the highest id)."""
    usable = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    if not usable:
        return None
    return max(usable, key=lambda a: (bool(a.get("ground_truth")), _timestamp(a), a.get("id") or 0))


def _split_key(task_id) -> bytes:
    return hashlib.blake2b(str(task_id).encode(), digest_size=8).digest()


def split_by_task_id(task_ids: Sequence, val_fraction: float = VAL_FRACTION) -> Tuple[list, list]:
    """(train ids, val ids): the same ids always give the same split, and a task keeps its side
    as others are added (order by a hash of the id). `val_fraction` of them validate, at least
    one task on each side (two tasks or more)."""
    ordered = sorted(task_ids, key=lambda task_id: (_split_key(task_id), str(task_id)))
    n_val = min(max(1, round(len(ordered) * val_fraction)), len(ordered) - 1)
    val = set(ordered[:n_val])
    return [t for t in task_ids if t not in val], [t for t in task_ids if t in val]


# ----- pose: keypoint order and flips -----------------------------------------------------------------

def keypoint_order(labels: Sequence[str], model_index: Mapping[str, int]) -> Tuple[str, ...]:
    """Keypoint labels in model order: those with a `model_index` by it, then the others in
    config order. Two labels on one index is a config error."""
    by_index: Dict[int, str] = {}
    for label in labels:
        if label in model_index:
            index = model_index[label]
            if index in by_index:
                raise CannotTrain(f"keypoint labels {by_index[index]!r} and {label!r} share model_index={index}")
            by_index[index] = label
    return tuple(by_index[i] for i in sorted(by_index)) + tuple(l for l in labels if l not in model_index)


_SIDE = re.compile(r"(?<![a-z])(left|right)(?![a-z])")


def flip_index(keypoints: Sequence[str]) -> List[int]:
    """Ultralytics' `flip_idx`: where each keypoint goes in a horizontally flipped image. A
    keypoint named with left/right as a word (`left_eye`, `Right Hand`) swaps with its mirror
    name (ignoring case) when the tag has it; any other keypoint stays."""
    position = {name.lower(): i for i, name in enumerate(keypoints)}
    mirror = {"left": "right", "right": "left"}
    return [position.get(_SIDE.sub(lambda m: mirror[m.group(1)], name.lower()), i) for i, name in enumerate(keypoints)]


# ----- regions -> label lines, one function per task ----------------------------------------------

def _label_of(region: dict) -> str:
    labels = (region.get("value") or {}).get(region.get("type", "").lower()) or []
    if not labels:
        raise Unusable("region without a label")
    return labels[0]


def _class_id(region: dict, classes: Sequence[str]) -> int:
    label = _label_of(region)
    if label not in classes:
        raise Unusable("label not in the labeling config")
    return classes.index(label)


def _image_size(region: dict, image_size: Tuple[int, int]) -> Tuple[int, int]:
    return int(region.get("original_width") or image_size[0]), int(region.get("original_height") or image_size[1])


def _box_corners(region: dict, image_size: Tuple[int, int]) -> np.ndarray:
    """Normalised corners (4x2) of a Label Studio rectangle rotated about its top-left corner."""
    from label_studio_sdk.converter.utils import convert_annotation_to_yolo_obb

    width, height = _image_size(region, image_size)
    value = region.get("value") or {}
    try:
        corners = convert_annotation_to_yolo_obb({**value, "rotation": float(value.get("rotation") or 0),
                                                  "original_width": width, "original_height": height})
    except (TypeError, ValueError, ZeroDivisionError):
        corners = None
    if corners is None:
        raise Unusable("rectangle without x, y, width, height")
    return np.asarray(corners, dtype=float)


def _numbers(values) -> str:
    return " ".join(f"{float(v):.6f}" for v in values)


def _box_line_values(region: dict, image_size: Tuple[int, int]) -> List[float]:
    """`cx cy w h` (normalised) of the axis-aligned box around a rectangle (rotated or not)."""
    corners = np.clip(_box_corners(region, image_size), 0.0, 1.0)
    (x1, y1), (x2, y2) = corners.min(axis=0), corners.max(axis=0)
    if x2 <= x1 or y2 <= y1:
        raise Unusable("empty rectangle")
    return [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]


def detect_lines(regions: Sequence[dict], tag: TrainableTag, image_size: Tuple[int, int]) -> List[str]:
    """`rectanglelabels` -> `class cx cy w h`."""
    return [f"{_class_id(r, tag.labels)} {_numbers(_box_line_values(r, image_size))}" for r in regions]


def obb_lines(regions: Sequence[dict], tag: TrainableTag, image_size: Tuple[int, int]) -> List[str]:
    """Rotated `rectanglelabels` -> `class x1 y1 x2 y2 x3 y3 x4 y4` (corners, normalised)."""
    return [f"{_class_id(r, tag.labels)} {_numbers(_box_corners(r, image_size).ravel())}" for r in regions]


def _polygon_outlines(region: dict) -> List[np.ndarray]:
    points = (region.get("value") or {}).get("points") or []
    if len(points) < 3:
        raise Unusable("polygon with fewer than 3 points")
    return [np.clip(np.asarray(points, dtype=float) / 100.0, 0.0, 1.0)]


def _brush_outlines(region: dict, image_size: Tuple[int, int]) -> List[np.ndarray]:
    """The outer contours of a brush mask (one per connected part; holes are not kept), through
    pixel centres, normalised."""
    import cv2
    from label_studio_sdk.converter.brush import decode_rle

    width, height = _image_size(region, image_size)
    rle = (region.get("value") or {}).get("rle")
    if not rle:
        raise Unusable("brush region without RLE")
    pixels = decode_rle(rle)
    if pixels.size != width * height * 4:
        raise Unusable("brush RLE does not match original_width x original_height")
    mask = (pixels.reshape(height, width, 4)[:, :, 3] >= 128).astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    outlines = [(c.reshape(-1, 2) + 0.5) / (width, height) for c in contours if len(c) >= 3]
    if not outlines:
        raise Unusable("empty brush mask")
    return outlines


def segment_lines(regions: Sequence[dict], tag: TrainableTag, image_size: Tuple[int, int]) -> List[str]:
    """`polygonlabels` / `brushlabels` -> `class x1 y1 x2 y2 ...` (one line per outline)."""
    lines = []
    for region in regions:
        class_id = _class_id(region, tag.labels)
        kind = region.get("type", "").lower()
        outlines = _brush_outlines(region, image_size) if kind == "brushlabels" else _polygon_outlines(region)
        lines.extend(f"{class_id} {_numbers(outline.ravel())}" for outline in outlines)
    return lines


def pose_lines(result: Sequence[dict], tag: TrainableTag, image_size: Tuple[int, int],
               ignored: Counter) -> List[str]:
    """Keypoints of the tag grouped under their parent box (`parentID`, a `rectanglelabels`
    region of any tag) -> `class cx cy w h x1 y1 v1 ...` in `tag.keypoints` order; a missing
    keypoint is `0 0 0`, a present one visible (2)."""
    boxes = {r.get("id"): r for r in result if r.get("type", "").lower() == "rectanglelabels" and r.get("id")}
    points: Dict[str, Dict[str, Tuple[float, float]]] = {}
    for region in result:
        if region.get("from_name") != tag.from_name or region.get("type", "").lower() != "keypointlabels":
            continue
        value = region.get("value") or {}
        label = (value.get("keypointlabels") or [None])[0]
        if region.get("parentID") not in boxes:
            ignored["keypoint without a parent box"] += 1
        elif label not in tag.keypoints:
            ignored["label not in the labeling config"] += 1
        elif "x" not in value or "y" not in value:
            ignored["keypoint without x, y"] += 1
        else:
            points.setdefault(region["parentID"], {})[label] = (value["x"] / 100.0, value["y"] / 100.0)
    lines = []
    for parent, by_label in points.items():
        try:
            class_id = 0 if len(tag.labels) == 1 else _class_id(boxes[parent], tag.labels)
            head = [class_id] + _box_line_values(boxes[parent], image_size)
        except Unusable as exc:
            ignored[f"parent box: {exc}"] += 1
            continue
        keypoints = [v for name in tag.keypoints
                     for v in ((*by_label[name], 2) if name in by_label else (0.0, 0.0, 0))]
        lines.append(f"{head[0]} {_numbers(head[1:])} {_numbers(keypoints)}")
    return lines


def classify_label(regions: Sequence[dict], tag: TrainableTag) -> str:
    """The one class of an image: its `choices` (or the leaf of its `taxonomy` path)."""
    chosen = []
    for region in regions:
        value = region.get("value") or {}
        chosen += value.get("choices") or [path[-1] for path in value.get("taxonomy") or [] if path]
    chosen = list(dict.fromkeys(chosen))
    if len(chosen) != 1:
        raise Unusable("not exactly one choice (classification learns one class per image)")
    if chosen[0] not in tag.labels:
        raise Unusable("label not in the labeling config")
    return chosen[0]


LINE_WRITERS: Dict[str, Callable] = {"detect": detect_lines, "obb": obb_lines, "segment": segment_lines}


# ----- the dataset on disk ------------------------------------------------------------------------

def _image_facts(path: str) -> Tuple[str, Tuple[int, int]]:
    """(file extension Ultralytics reads, (width, height) as shown after EXIF orientation)."""
    from PIL import Image

    with Image.open(path) as image:
        extension = IMAGE_EXTENSIONS.get(image.format)
        if extension is None:
            raise ValueError(f"{image.format} images cannot be used for training")
        width, height = image.size
        if image.getexif().get(EXIF_ORIENTATION) in EXIF_TRANSPOSED:
            width, height = height, width
    return extension, (width, height)


def _class_folder(label: str) -> str:
    """Classification classes are folder names (Ultralytics orders them alphabetically)."""
    if not label.strip() or label.startswith(".") or any(c in label for c in "/\\\0"):
        raise CannotTrain(f"label {label!r} cannot name a class folder: rename it for classification training")
    return label


class _Builder:
    """Writes one dataset; collects skipped tasks and ignored regions."""

    def __init__(self, tag: TrainableTag, root: str, media: Callable[[dict], str]):
        self.tag, self.root, self.media = tag, os.path.abspath(root), media
        self.skipped: Dict[str, str] = {}
        self.ignored: Counter = Counter()

    def example(self, task: dict):
        """(image path, extension, labels: list of lines, or a class name for classify) of one task."""
        annotation = choose_annotation(task)
        if annotation is None:
            raise Unusable("no annotation (or only cancelled ones)")
        result = annotation.get("result") or []
        regions = [r for r in result if r.get("from_name") == self.tag.from_name]
        if result and not regions:
            raise Unusable(f"the annotation has no regions of '{self.tag.from_name}'")
        if self.tag.task == "classify":
            label = classify_label(regions, self.tag)  # checked before fetching the media
            return (*self.fetch(task)[:2], label)
        path, extension, size = self.fetch(task)
        return path, extension, self.lines(result, regions, size)

    def fetch(self, task: dict) -> Tuple[str, str, Tuple[int, int]]:
        """(local path, extension, size) of the task's image; any failure skips just this task."""
        try:
            path = self.media(task)
            return (path, *_image_facts(path))
        except Exception as exc:
            raise Unusable(f"media: {type(exc).__name__}: {exc}") from exc

    def lines(self, result: list, regions: list, size: Tuple[int, int]) -> List[str]:
        if self.tag.task == "pose":
            lines = pose_lines(result, self.tag, size, self.ignored)
        else:
            lines = []
            for region in regions:
                try:
                    lines += LINE_WRITERS[self.tag.task]([region], self.tag, size)
                except Unusable as exc:
                    self.ignored[str(exc)] += 1
        if regions and not lines:
            raise Unusable("no usable region")
        return lines  # empty for an annotation without any region: a background image

    def write(self, split: str, task_id, example) -> None:
        path, extension, labels = example
        if self.tag.task == "classify":
            image_dir = os.path.join(self.root, split, _class_folder(labels))
        else:
            image_dir = os.path.join(self.root, "images", split)
            label_dir = os.path.join(self.root, "labels", split)
            os.makedirs(label_dir, exist_ok=True)
            with open(os.path.join(label_dir, f"{task_id}.txt"), "w") as f:
                f.write("".join(line + "\n" for line in labels))
        os.makedirs(image_dir, exist_ok=True)
        shutil.copyfile(path, os.path.join(image_dir, f"{task_id}{extension}"))

    def data_file(self) -> str:
        """data.yaml (classify: the root folder, with a folder for every class even if empty)."""
        import yaml

        if self.tag.task == "classify":
            for split in ("train", "val"):
                for label in self.tag.labels:
                    os.makedirs(os.path.join(self.root, split, _class_folder(label)), exist_ok=True)
            return self.root
        data = {"path": self.root, "train": "images/train", "val": "images/val",
                "names": dict(enumerate(self.tag.labels))}
        if self.tag.task == "pose":
            data["kpt_shape"] = [len(self.tag.keypoints), 3]
            data["flip_idx"] = flip_index(self.tag.keypoints)
        path = os.path.join(self.root, "data.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(data, f, allow_unicode=True, sort_keys=False)
        return path


def build_dataset(tasks: Sequence[dict], tag: TrainableTag, media: Callable[[dict], str], root: str,
                  min_tasks: int = DEFAULT_MIN_TASKS) -> Dataset:
    """Write the Ultralytics dataset of `tag` from annotated `tasks` into `root` (a new or empty
    folder). Raises `CannotTrain` when fewer than `min_tasks` tasks are usable."""
    builder = _Builder(tag, root, media)
    examples = {}
    for task in tasks:
        task_id = task.get("id")
        try:
            if not str(task_id).isdigit():  # ids name files
                raise Unusable("task without an integer id")
            examples[int(task_id)] = builder.example(task)
        except Unusable as exc:
            builder.skipped[str(task_id)] = str(exc)
    if builder.skipped:
        logger.info("'%s': %d tasks skipped: %s", tag.from_name, len(builder.skipped),
                    dict(Counter(builder.skipped.values())))
    needed = max(min_tasks, 2)
    if len(examples) < needed:
        raise CannotTrain(
            f"'{tag.from_name}' has {len(examples)} usable annotated tasks, {needed} are needed "
            f"(model_train_min_tasks); {len(builder.skipped)} skipped: {dict(Counter(builder.skipped.values()))}")
    if tag.task == "classify":
        for label in tag.labels:
            _class_folder(label)  # every label must name a folder, before anything is written
    train_ids, val_ids = split_by_task_id(list(examples))
    for split, ids in (("train", train_ids), ("val", val_ids)):
        for task_id in ids:
            builder.write(split, task_id, examples[task_id])
    data = builder.data_file()
    names = tuple(sorted(tag.labels)) if tag.task == "classify" else tag.labels  # as Ultralytics names them
    return Dataset(root=builder.root, data=data, task=tag.task, names=names, train_ids=train_ids,
                   val_ids=val_ids, skipped=builder.skipped, ignored_regions=dict(builder.ignored))

"""Where YOLO weights come from: a `model_path` is a file name under `MODEL_ROOT` and can never
leave that directory; official Ultralytics weights may be downloaded there on first use."""

import os
from typing import List

from label_studio_ml.exceptions import LabelConfigError

WEIGHT_SUFFIXES = (".pt", ".onnx", ".torchscript", ".engine", ".mlpackage", ".tflite")


def available_models(root: str) -> List[str]:
    if not os.path.isdir(root):
        return []
    return sorted(name for name in os.listdir(root) if name.endswith(WEIGHT_SUFFIXES))


def is_downloadable(name: str) -> bool:
    """Official Ultralytics weights (`yolov8n.pt`, ...) that Ultralytics fetches on first use."""
    from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES

    return name in GITHUB_ASSETS_NAMES


def resolve_in_root(name: str, root: str, what: str = "model_path") -> str:
    """Absolute path of `name` inside `root` (MODEL_ROOT); 400 for anything escaping it.

    The check is on the name, not on where a file resolves: symlinks an administrator placed in
    MODEL_ROOT (a mounted volume, shared weights) are trusted."""
    root = os.path.abspath(root)
    if not isinstance(name, str) or not name.strip():
        raise LabelConfigError(f"{what} is empty")
    if os.path.isabs(name) or name.startswith("~") or ".." in name.replace("\\", "/").split("/"):
        raise LabelConfigError(f"{what}={name!r} must be a file name inside MODEL_ROOT, not a path")
    path = os.path.abspath(os.path.join(root, name))
    if os.path.commonpath([path, root]) != root:
        raise LabelConfigError(f"{what}={name!r} points outside MODEL_ROOT")
    return path


def available_models_text(root: str) -> str:
    """"available: a.pt, b.onnx" (or "none"), for messages about a model_path that cannot be served."""
    return "available: " + (", ".join(available_models(root)) or "none")


def is_sam_weights(path: str) -> bool:
    """Segment Anything weights, told apart by file name as Ultralytics' `SAM` does (`sam_b.pt`,
    `mobile_sam.pt`, `sam2.1_t.pt`, ...): they load with `SAM`, not `YOLO`, and stay on PyTorch."""
    from ultralytics.models.sam.build import sam_model_map

    name = os.path.basename(path)
    return name.endswith(tuple(sam_model_map)) or "sam3" in os.path.splitext(name)[0]


def resolve_model_path(name: str, root: str) -> str:
    """Path of weights `name` under `root` (MODEL_ROOT): an existing weights file, or official
    weights that will be downloaded there on first use. Anything else (a missing file, a file that
    is no weights such as an OpenVINO .xml/.bin or a tracker YAML) is a 400 listing the weights
    that are there."""
    path = resolve_in_root(name, root)
    if not name.endswith(WEIGHT_SUFFIXES):
        raise LabelConfigError(f"model_path={name!r} is not a weights file (one of {', '.join(WEIGHT_SUFFIXES)}); "
                               f"{available_models_text(root)}")
    if os.path.isfile(path) or is_downloadable(os.path.basename(name)):
        return path
    raise LabelConfigError(f"Model file {name!r} not found in MODEL_ROOT ({os.path.abspath(root)}); "
                           f"{available_models_text(root)}")

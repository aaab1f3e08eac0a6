#!/usr/bin/env python3
"""Train the tiny YOLO models used by the test-suite on synthetic scenes.

    python examples/yolo/tests/make_test_models.py [--only detect,obb,...] [--force] [--out DIR]

For every task this writes an Ultralytics-format dataset drawn by
``synthetic.py`` into a temporary directory, trains a tiny model from the
YAMLs in ``model_configs/`` (no pretrained weights, CPU, fixed seed, no
downloads), copies the resulting checkpoint to ``<out>/shapes-<task>.pt`` and
checks it on fresh held-out scenes (seeds >= synthetic.HELDOUT_SEED_START).

Existing model files are skipped unless ``--force`` is given.  Everything
Ultralytics writes (runs/, datasets, caches) stays in the temporary directory.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

# Must be set before ultralytics is imported: no DNS/online checks, no pip
# auto-installs, no analytics.
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
os.environ.setdefault("YOLO_VERBOSE", "false")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import synthetic as syn  # noqa: E402

CONFIGS = HERE / "model_configs"
DEFAULT_OUT = HERE / "models"
SEED = 0
N_CHECK = 20

# name -> settings.  n_train/n_val: number of generated scenes (seeds 0.. and
# n_train..), imgsz: training (and therefore default inference) size.
TASKS = {
    "detect": dict(
        file="shapes-det.pt", cfg="shapes-det.yaml", imgsz=192, n_train=600, n_val=60,
        epochs=25, batch=16,
    ),
    "obb": dict(
        file="shapes-obb.pt", cfg="shapes-obb.yaml", imgsz=192, n_train=600, n_val=60,
        epochs=30, batch=16,
    ),
    "segment": dict(
        file="shapes-seg.pt", cfg="shapes-seg.yaml", imgsz=192, n_train=600, n_val=60,
        epochs=30, batch=16,
    ),
    "classify": dict(
        file="shapes-cls.pt", cfg="shapes-cls.yaml", imgsz=96, n_train=600, n_val=60,
        epochs=10, batch=32,
    ),
    "pose": dict(
        file="shapes-pose.pt", cfg="shapes-pose.yaml", imgsz=192, n_train=600, n_val=60,
        epochs=80, batch=16, pose_gain=24.0, scale=0.3, mosaic=0.0,
    ),
}


def log(msg: str) -> None:
    print(f"[make_test_models] {msg}", flush=True)


# --------------------------------------------------------------------------- #
# Dataset writers
# --------------------------------------------------------------------------- #
def _fmt(values) -> str:
    return " ".join(f"{float(v):.6f}" for v in values)


def _write_names(fh, names) -> None:
    fh.write("names:\n")
    for i, n in enumerate(names):
        fh.write(f"  {i}: {n}\n")


def write_yolo_dataset(task: str, root: Path, n_train: int, n_val: int) -> Path:
    """Write images + labels for detect/obb/segment/pose; return data.yaml."""
    gen = {
        "detect": (syn.detection_scene, syn.DETECTION_CLASSES),
        "obb": (syn.obb_scene, syn.OBB_CLASSES),
        "segment": (syn.segmentation_scene, syn.SEGMENTATION_CLASSES),
        "pose": (syn.pose_scene, syn.POSE_CLASSES),
    }
    scene_fn, names = gen[task]
    splits = {"train": range(0, n_train), "val": range(n_train, n_train + n_val)}
    for split, seeds in splits.items():
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for seed in seeds:
            img, objects = scene_fn(seed)
            h, w = img.shape[:2]
            scale = np.array([w, h], dtype=np.float64)
            lines = []
            for o in objects:
                cls = names.index(o["label"])
                if task == "detect":
                    x1, y1, x2, y2 = o["xyxy"]
                    lines.append(f"{cls} " + _fmt([(x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h]))
                elif task == "obb":
                    lines.append(f"{cls} " + _fmt((o["corners"] / scale).ravel()))
                elif task == "segment":
                    lines.append(f"{cls} " + _fmt(np.clip(o["polygon"] / scale, 0, 1).ravel()))
                elif task == "pose":
                    x1, y1, x2, y2 = o["xyxy"]
                    kpts = np.concatenate(
                        [o["keypoints"] / scale, np.full((len(o["keypoints"]), 1), 2.0)], axis=1
                    )
                    lines.append(
                        f"{cls} "
                        + _fmt([(x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h])
                        + " "
                        + _fmt(kpts.ravel())
                    )
            name = f"{seed:06d}"
            cv2.imwrite(str(root / "images" / split / f"{name}.png"), img)
            (root / "labels" / split / f"{name}.txt").write_text("\n".join(lines) + "\n")
    data_yaml = root / "data.yaml"
    with open(data_yaml, "w") as fh:
        fh.write(f"path: {root}\ntrain: images/train\nval: images/val\n")
        if task == "pose":
            fh.write(f"kpt_shape: [{syn.NUM_KEYPOINTS}, 3]\n")
            # keypoints are identified by marker colour, which a horizontal
            # flip keeps: identity flip permutation
            fh.write(f"flip_idx: {list(range(syn.NUM_KEYPOINTS))}\n")
        _write_names(fh, names)
    return data_yaml


def write_cls_dataset(root: Path, n_train: int, n_val: int) -> Path:
    """ImageFolder layout root/{train,val}/<class>/*.png; returns root."""
    for split, seeds in {"train": range(0, n_train), "val": range(n_train, n_train + n_val)}.items():
        for c in syn.CLASSIFICATION_CLASSES:
            (root / split / c).mkdir(parents=True, exist_ok=True)
        for seed in seeds:
            label = syn.CLASSIFICATION_CLASSES[seed % len(syn.CLASSIFICATION_CLASSES)]
            img, label = syn.classification_image(seed, label=label)
            cv2.imwrite(str(root / split / label / f"{seed:06d}.png"), img)
    return root


# --------------------------------------------------------------------------- #
# Metrics
# --------------------------------------------------------------------------- #
def box_iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def poly_iou(p, q) -> float:
    p = np.asarray(p, dtype=np.float32).reshape(-1, 2)
    q = np.asarray(q, dtype=np.float32).reshape(-1, 2)
    inter, _ = cv2.intersectConvexConvex(p, q)
    union = cv2.contourArea(p) + cv2.contourArea(q) - inter
    return float(inter / union) if union > 0 else 0.0


def mask_iou(a, b) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def angle_diff_180(a: float, b: float) -> float:
    d = abs(a - b) % 180.0
    return min(d, 180.0 - d)


def verify(task: str, model_path: Path) -> dict:
    """Run the model on N_CHECK held-out scenes and compute simple figures."""
    from ultralytics import YOLO

    model = YOLO(str(model_path), task=task)
    ious, confs, angle_errs, kp_errs = [], [], [], []
    hits = total = extra = 0
    t_inf = 0.0
    for i in range(N_CHECK):
        seed = syn.HELDOUT_SEED_START + i
        if task == "classify":
            img, label = syn.classification_image(seed)
        else:
            img, objects = {
                "detect": syn.detection_scene,
                "obb": syn.obb_scene,
                "segment": syn.segmentation_scene,
                "pose": syn.pose_scene,
            }[task](seed)
        h, w = img.shape[:2]
        t0 = time.perf_counter()
        r = model.predict(img, device="cpu", verbose=False)[0]
        t_inf += time.perf_counter() - t0
        names = r.names

        if task == "classify":
            total += 1
            top1 = names[int(r.probs.top1)]
            conf = float(r.probs.top1conf)
            confs.append(conf)
            hits += int(top1 == label and conf > 0.5)
            continue

        # predictions: list of (label, conf, geometry)
        if task == "obb":
            preds = [
                (names[int(c)], float(s), corners)
                for c, s, corners in zip(r.obb.cls, r.obb.conf, r.obb.xyxyxyxy.numpy())
            ]
        else:
            preds = [(names[int(c)], float(s), xyxy) for c, s, xyxy in zip(r.boxes.cls, r.boxes.conf, r.boxes.xyxy.numpy())]
        used = set()
        for o in objects:
            total += 1
            best, best_j = 0.0, None
            for j, p in enumerate(preds):
                if j in used or p[0] != o["label"]:
                    continue
                if task == "obb":
                    iou = poly_iou(p[2], o["corners"])
                elif task == "segment":
                    if r.masks is None:
                        continue
                    pm = syn.polygon_to_mask(r.masks.xy[j], w, h) if len(r.masks.xy[j]) >= 3 else np.zeros((h, w), bool)
                    iou = mask_iou(pm, o["mask"])
                else:
                    iou = box_iou(p[2], o["xyxy"])
                if iou > best:
                    best, best_j = iou, j
            ious.append(best)
            if best_j is None:
                continue
            used.add(best_j)
            p = preds[best_j]
            confs.append(p[1])
            ok = best >= 0.5 and p[1] > 0.5
            if task == "obb":
                xywhr = r.obb.xywhr.numpy()[best_j]
                long_angle = math.degrees(xywhr[4]) + (0.0 if xywhr[2] >= xywhr[3] else 90.0)
                err = angle_diff_180(long_angle, o["angle_deg"])
                angle_errs.append(err)
                ok = ok and err <= 10.0
            if task == "pose":
                kp = r.keypoints.xy.numpy()[best_j]
                err = np.abs(kp - o["keypoints"]) / np.array([w, h])
                kp_errs.append(float(err.max()))
                ok = ok and err.max() <= 0.05
            hits += int(ok)
        extra += sum(1 for j, p in enumerate(preds) if j not in used and p[1] > 0.5)

    res = {
        "hit_rate": hits / max(total, 1),
        "n": total,
        "ms_per_image": 1000 * t_inf / N_CHECK,
        "min_conf": min(confs) if confs else 0.0,
        "mean_conf": float(np.mean(confs)) if confs else 0.0,
    }
    if ious:
        res["mean_iou"] = float(np.mean(ious))
        res["min_iou"] = float(np.min(ious))
    if task != "classify":
        res["false_pos"] = extra
    if angle_errs:
        res["mean_angle_err"] = float(np.mean(angle_errs))
        res["max_angle_err"] = float(np.max(angle_errs))
    if kp_errs:
        res["mean_kp_err_pct"] = 100 * float(np.mean(kp_errs))
        res["max_kp_err_pct"] = 100 * float(np.max(kp_errs))
    return res


# --------------------------------------------------------------------------- #
# Training
# --------------------------------------------------------------------------- #
def train_one(task: str, out_dir: Path, tmp_root: Path) -> Path:
    from ultralytics import YOLO

    spec = TASKS[task]
    work = tmp_root / task
    data_root = work / "data"
    t0 = time.time()
    if task == "classify":
        data = str(write_cls_dataset(data_root, spec["n_train"], spec["n_val"]))
    else:
        data = str(write_yolo_dataset(task, data_root, spec["n_train"], spec["n_val"]))
    log(f"{task}: dataset written in {time.time() - t0:.1f}s ({spec['n_train']} train / {spec['n_val']} val)")

    model = YOLO(str(CONFIGS / spec["cfg"]), task=task)
    train_args = dict(
        data=data,
        epochs=spec["epochs"],
        imgsz=spec["imgsz"],
        batch=spec["batch"],
        device="cpu",
        workers=0,
        seed=SEED,
        deterministic=True,
        pretrained=False,
        amp=False,
        plots=False,
        cache="ram",
        val=True,
        project=str(work / "runs"),
        name="train",
        exist_ok=True,
        verbose=False,
        patience=1000,
        close_mosaic=max(1, spec["epochs"] // 6),
    )
    if task == "classify":
        # keep random crops mild so the shape is never cropped away
        train_args.update(scale=0.1, fliplr=0.5, erasing=0.0, hsv_h=0.0)
    else:
        train_args.update(hsv_h=0.0)
    if task == "pose":
        # Without mirror images the clockwise order of the markers is fixed,
        # so a keypoint can be told apart by geometry as well as by colour
        # (with flips the tiny model confuses e.g. top_left and bottom_left).
        # Keypoint precision is the hard part for such a tiny model: higher
        # keypoint loss gain, milder scale augmentation and no mosaic (the
        # losses dropped sharply whenever mosaic was switched off).
        train_args.update(
            fliplr=0.0,
            pose=spec.get("pose_gain", 12.0),
            scale=spec.get("scale", 0.5),
            mosaic=spec.get("mosaic", 1.0),
        )
    t1 = time.time()
    model.train(**train_args)
    train_s = time.time() - t1
    weights = work / "runs" / "train" / "weights"
    src = weights / "best.pt" if (weights / "best.pt").exists() else weights / "last.pt"
    dst = out_dir / spec["file"]
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    log(f"{task}: trained in {train_s:.0f}s -> {dst} ({dst.stat().st_size / 1e6:.2f} MB)")
    return dst


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(TASKS), help=f"comma separated subset of {','.join(TASKS)}")
    ap.add_argument("--force", action="store_true", help="retrain even if the model file exists")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    ap.add_argument("--verify-only", action="store_true", help="only check existing model files")
    ap.add_argument("--keep-tmp", action="store_true", help="do not delete the temporary work directory")
    args = ap.parse_args(argv)

    tasks = [t.strip() for t in args.only.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        ap.error(f"unknown task(s) {unknown}; choose from {list(TASKS)}")

    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    tmp_root = Path(tempfile.mkdtemp(prefix="yolo-test-models-"))
    # keep Ultralytics' default runs/ and datasets dirs out of the repo too
    cwd = os.getcwd()
    os.chdir(tmp_root)
    t_all = time.time()
    try:
        for task in tasks:
            dst = (Path(cwd) / args.out).resolve() / TASKS[task]["file"]
            if not args.verify_only:
                if dst.exists() and not args.force:
                    log(f"{task}: {dst} exists, skipping training (use --force)")
                else:
                    train_one(task, dst.parent, tmp_root)
            if not dst.exists():
                log(f"{task}: {dst} missing")
                continue
            res = verify(task, dst)
            log(f"{task}: verify on {N_CHECK} held-out scenes: " + ", ".join(
                f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in res.items()
            ))
    finally:
        os.chdir(cwd)
        if args.keep_tmp:
            log(f"kept {tmp_root}")
        else:
            shutil.rmtree(tmp_root, ignore_errors=True)
    log(f"done in {time.time() - t_all:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

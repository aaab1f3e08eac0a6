#!/usr/bin/env python3
"""Smart-tool latency on this machine: median of N clicks, answered by the served backend
(start.sh -> gunicorn, over HTTP, image decoding and RLE included).

    python examples/yolo/benchmarks/smart_tools_latency.py [--clicks 10] [--images 3] [--size 1280x960]
                                                   [--seg-model PATH] [--sam-model PATH]

- YOLO-seg: clicks answered by the backend (the first on an image runs the model, later ones
  reuse its instances), against a raw Ultralytics `predict` of the same weights on the same
  image file in this process (target: at most 1.2x).
- SAM: the first click on an image (encoder + decoder) against later clicks on that image (the
  decoder only, the embedding is cached; target: at most 0.25x).

Defaults run from a fresh clone: the test suite's shapes-seg.pt and a randomly initialised
MobileSAM-architecture checkpoint (tests/sam_test_model.py; its masks are meaningless, its cost is
MobileSAM's). Pass real weights (e.g. --sam-model sam_b.pt) to measure those instead.
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
YOLO_DIR = os.path.dirname(HERE)
TESTS_DIR = os.path.join(YOLO_DIR, "tests")
for path in (HERE, TESTS_DIR, YOLO_DIR):
    sys.path.insert(0, path)

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import requests  # noqa: E402

import synthetic  # noqa: E402
from label_studio_ml.settings import Settings  # noqa: E402
from load import served_backend  # noqa: E402
from sam_test_model import sam_test_model  # noqa: E402
from test_interactive import click  # noqa: E402
from utils.ultralytics_env import prepare_ultralytics  # noqa: E402


def scene(seed: int, size: tuple) -> tuple:
    """A synthetic scene scaled to `size`: (BGR image, object centres in its pixels)."""
    image, objects = synthetic.segmentation_scene(seed)
    scale = np.array(size) / (image.shape[1], image.shape[0])
    return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR), [np.asarray(o["center"]) * scale for o in objects]


def ask(base: str, config: str, path: str, xy, size) -> float:
    """Seconds for one smart-tool click answered with a region."""
    started = time.perf_counter()
    response = requests.post(base + "/predict", timeout=300, json={
        "tasks": [{"id": 1, "data": {"image": path}}], "label_config": config, "project": "1",
        "params": {"context": {"result": [click(xy, size)]}}})
    took = time.perf_counter() - started
    response.raise_for_status()
    if not response.json()["results"][0]["result"]:
        sys.exit(f"no region for the click at {xy} on {path}: {response.text[:300]}")
    return took


def output_config(model_name: str) -> str:
    return ('<View><Image name="image" value="$image"/><KeyPointLabels name="kp" toName="image" smart="true">'
            '<Label value="Shape"/></KeyPointLabels><BrushLabels name="mask" toName="image" '
            f'model_path="{model_name}"><Label value="Shape"/></BrushLabels></View>')


def median_ms(values) -> float:
    return statistics.median(values) * 1000


def click_times(base: str, work: str, model_name: str, images: int, clicks: int, size: tuple, seed: int) -> tuple:
    """(first click on each image, later clicks on it): seconds; the first image only warms up
    (it loads, and on a CPU exports, the model)."""
    config = output_config(model_name)
    firsts, laters, paths = [], [], []
    for n in range(images + 1):
        image, centres = scene(seed + n, size)
        path = os.path.join(work, f"{seed + n}.png")
        cv2.imwrite(path, image)
        paths.append(path)
        first = ask(base, config, path, centres[0], size)
        later = [ask(base, config, path, centres[(i + 1) % len(centres)], size) for i in range(max(1, clicks // images))]
        if n:
            firsts.append(first)
            laters += later
    return firsts, laters, paths[1:]


def yolo_seg(base: str, work: str, model_path: str, images: int, clicks: int, size: tuple) -> None:
    from ultralytics import YOLO

    firsts, laters, paths = click_times(base, work, os.path.basename(model_path), images, clicks, size,
                                        synthetic.HELDOUT_SEED_START)
    raw = YOLO(model_path)
    raw.predict(paths[0], verbose=False)  # warm-up, not timed
    raws = []
    for i in range(clicks):  # from the file, as the backend has it: Ultralytics decodes it too
        started = time.perf_counter()
        raw.predict(paths[i % len(paths)], verbose=False, conf=0.5)
        raws.append(time.perf_counter() - started)
    print(f"YOLO-seg {os.path.basename(model_path)} on {size[0]}x{size[1]}: raw Ultralytics predict "
          f"{median_ms(raws):.1f} ms (median of {len(raws)}); interactive answer: first click on an image "
          f"{median_ms(firsts):.1f} ms (median of {len(firsts)}, {median_ms(firsts) / median_ms(raws):.2f}x), "
          f"later clicks {median_ms(laters):.1f} ms (median of {len(laters)}, "
          f"{median_ms(laters) / median_ms(raws):.2f}x); all clicks {median_ms(firsts + laters) / median_ms(raws):.2f}x "
          f"(target <= 1.2x)")


def sam(base: str, work: str, model_name: str, images: int, clicks: int, size: tuple) -> None:
    firsts, laters, _ = click_times(base, work, model_name, images, clicks, size, synthetic.HELDOUT_SEED_START + 100)
    print(f"SAM {model_name} on {size[0]}x{size[1]}: first click on an image {median_ms(firsts):.0f} ms "
          f"(median of {len(firsts)}), later clicks {median_ms(laters):.0f} ms (median of {len(laters)}) "
          f"-> {median_ms(laters) / median_ms(firsts):.2f}x (target <= 0.25x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clicks", type=int, default=10, help="timed clicks per engine (default 10)")
    parser.add_argument("--images", type=int, default=3, help="images, each clicked first then again (default 3)")
    parser.add_argument("--size", default="1280x960", help="image size WIDTHxHEIGHT (default 1280x960)")
    parser.add_argument("--seg-model", default=os.path.join(TESTS_DIR, "models", "shapes-seg.pt"))
    parser.add_argument("--sam-model", default=None, help="SAM weights (default: a random MobileSAM)")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))

    work = tempfile.mkdtemp(prefix="interactive-bench-")
    try:
        prepare_ultralytics(Settings(model_dir=os.path.join(work, "model_dir")))  # before Ultralytics is imported
        sam_path = args.sam_model or sam_test_model()
        root = os.path.join(work, "models")
        os.makedirs(root)
        for weights in (args.seg_model, sam_path):
            shutil.copy(weights, root)
        env = {"MODEL_ROOT": root, "MODEL_DIR": os.path.join(work, "model_dir")}
        with served_backend(env, workers=1, threads=2, log_path=os.path.join(work, "backend.log")) as (base, _):
            yolo_seg(base, work, os.path.join(root, os.path.basename(args.seg_model)), args.images, args.clicks, size)
            sam(base, work, os.path.basename(sam_path), args.images, args.clicks, size)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""How much the TimelineLabels feature cache saves: the first extraction of a video's per-frame
features (decode + classification model) against the second one (read from the cache).

    python examples/yolo/benchmarks/feature_cache.py [--frames 600] [--size 224] [--model PATH]

Runs from a fresh clone: it writes a synthetic video and uses the test suite's tiny
classification model (examples/yolo/tests/models/shapes-cls.pt) unless --model names other
weights. Everything it writes goes to a temporary directory.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
YOLO_DIR = os.path.dirname(HERE)
TESTS_DIR = os.path.join(YOLO_DIR, "tests")
REPO_ROOT = os.path.dirname(os.path.dirname(YOLO_DIR))
for path in (REPO_ROOT, TESTS_DIR, YOLO_DIR):
    sys.path.insert(0, path)
os.environ.setdefault("YOLO_OFFLINE", "1")

import numpy as np  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=600, help="video length in frames (default 600)")
    parser.add_argument("--size", type=int, default=224, help="frame width and height in pixels (default 224)")
    parser.add_argument("--model", default=os.path.join(TESTS_DIR, "models", "shapes-cls.pt"),
                        help="classification weights (default: the test suite's shapes-cls.pt)")
    args = parser.parse_args()
    if not os.path.isfile(args.model):
        sys.exit(f"{args.model} not found: run examples/yolo/tests/make_test_models.py or pass --model")

    work = tempfile.mkdtemp(prefix="feature-cache-bench-")
    try:
        model_root = os.path.join(work, "models")
        os.makedirs(model_root)
        shutil.copy(args.model, model_root)

        import synthetic_video
        from label_studio_ml.settings import Settings
        from model import YOLO
        from utils import files
        from utils.settings import YoloSettings

        labels = ["circle", "square", "triangle", None]
        segments = [(labels[i % len(labels)], 30) for i in range(args.frames // 30)] + [("circle", args.frames % 30)]
        path = os.path.join(work, "video.mp4")
        synthetic_video.timeline_video(path, [s for s in segments if s[1]], size=args.size)

        config = ('<View><Video name="video" value="$video"/><TimelineLabels name="events" toName="video" '
                  f'model_path="{os.path.basename(args.model)}" model_trainable="true"><Label value="A"/></TimelineLabels></View>')
        settings = Settings(model_dir=os.path.join(work, "model_dir"))
        backend = YOLO(project_id="1", label_config=config, settings=settings,
                       yolo_settings=YoloSettings(model_root=model_root))
        (control,) = backend.control_models()
        control.model.predict([np.zeros((args.size, args.size, 3), np.uint8)], 1)  # load and warm up: not timed

        started = time.perf_counter()
        first = control.features(path)
        first_s = time.perf_counter() - started

        files._digests.clear()  # as in a fresh process: the video is hashed again
        started = time.perf_counter()
        second = control.features(path)
        second_s = time.perf_counter() - started
        assert np.array_equal(first, second), "cached features differ from computed ones"

        print(f"video: {args.frames} frames of {args.size}x{args.size}, model {os.path.basename(args.model)}, "
              f"features {first.shape[1]} per frame")
        print(f"first extraction (decode + model): {first_s:8.3f} s")
        print(f"second extraction (cache):         {second_s:8.3f} s")
        print(f"speed-up:                          {first_s / second_s:8.1f} x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

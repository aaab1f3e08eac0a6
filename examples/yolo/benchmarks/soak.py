"""Soak test: a loop of mixed /predict requests against the served backend, watching its memory.

    python examples/yolo/benchmarks/soak.py --minutes 10

Every model is loaded by one request first; then it prints resident memory (gunicorn master +
workers) after warm-up and at the end, the growth in percent, the media cache size, and exits 1
when memory grew by 5% or more or a request failed.
"""

import argparse
import os
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

import cv2  # noqa: E402

import synthetic  # noqa: E402
from load import YOLO_DIR, predict, process_tree_rss, served_backend  # noqa: E402

TEST_MODELS = os.getenv("YOLO_TEST_MODELS_DIR") or os.path.join(YOLO_DIR, "tests", "models")


def _labels(names, tag="Label"):
    return "".join(f'<{tag} value="{n}"/>' for n in names)


CONFIGS = {
    "detect": f'<RectangleLabels name="r" toName="image" model_path="shapes-det.pt">{_labels(synthetic.DETECTION_CLASSES)}</RectangleLabels>',
    "classify": f'<Choices name="c" toName="image" model_path="shapes-cls.pt">{_labels(synthetic.CLASSIFICATION_CLASSES, "Choice")}</Choices>',
    "segment": f'<PolygonLabels name="p" toName="image" model_path="shapes-seg.pt">{_labels(synthetic.SEGMENTATION_CLASSES)}</PolygonLabels>',
    "brush": f'<BrushLabels name="b" toName="image" model_path="shapes-seg.pt">{_labels(synthetic.SEGMENTATION_CLASSES)}</BrushLabels>',
    "pose": '<KeyPointLabels name="k" toName="image" model_path="shapes-pose.pt">'
            + "".join(f'<Label value="{n}" predicted_values="card" model_index="{i}"/>' for i, n in enumerate(synthetic.POSE_KEYPOINTS))
            + "</KeyPointLabels>",
}


def write_images(directory: str, count: int) -> list:
    """Distinct scene images (a fresh set each run, so the media paths vary)."""
    paths = []
    for i in range(count):
        image, _ = synthetic.detection_scene(synthetic.HELDOUT_SEED_START + 500 + i)
        path = os.path.join(directory, f"soak-{i}.png")
        cv2.imwrite(path, image)
        paths.append(path)
    broken = os.path.join(directory, "broken.png")
    with open(broken, "wb") as f:
        f.write(b"not an image")
    return paths + [broken]


def run(minutes: float, warmup_fraction: float, workers: int, threads: int, images: int) -> int:
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_images(tmp, images)
        env = {"MODEL_ROOT": TEST_MODELS, "MODEL_DIR": os.path.join(tmp, "model_dir")}
        with served_backend(env, workers=workers, threads=threads, log_path=os.path.join(tmp, "server.log")) as (base, proc):
            for kind in sorted(CONFIGS):  # every model loaded (exported, its engines raced on a CPU) first
                predict(base, [{"id": 0, "data": {"image": paths[0]}}],
                        f'<View><Image name="image" value="$image"/>{CONFIGS[kind]}</View>')
            end = time.monotonic() + minutes * 60
            warm_until = time.monotonic() + minutes * 60 * warmup_fraction
            baseline, requests_done, failures = None, 0, 0
            while time.monotonic() < end:
                kind = rng.choice(sorted(CONFIGS))
                batch = [{"id": j, "data": {"image": rng.choice(paths)}} for j in range(rng.randint(1, 4))]
                response = predict(base, batch, f'<View><Image name="image" value="$image"/>{CONFIGS[kind]}</View>')
                requests_done += 1
                if response.status_code != 200 or len(response.json()["results"]) != len(batch):
                    failures += 1
                if baseline is None and time.monotonic() >= warm_until:
                    baseline = process_tree_rss(proc.pid)
            final = process_tree_rss(proc.pid)
            media_cache = os.path.join(env["MODEL_DIR"], "media-cache")
            cache_bytes = sum(e.stat().st_size for e in os.scandir(media_cache)) if os.path.isdir(media_cache) else 0
    baseline = baseline or final
    growth = (final - baseline) / baseline * 100
    print(f"requests: {requests_done}, failed: {failures}")
    print(f"rss after warm-up: {baseline / 2**20:.1f} MiB, at end: {final / 2**20:.1f} MiB, growth: {growth:+.2f}%")
    print(f"media cache: {cache_bytes / 2**20:.1f} MiB")
    return 0 if growth < 5 and failures == 0 else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=0.25, help="fraction of the run before the baseline")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--images", type=int, default=12)
    args = parser.parse_args(argv)
    return run(args.minutes, args.warmup, args.workers, args.threads, args.images)


if __name__ == "__main__":
    sys.exit(main())

"""Speed of the served backend against raw Ultralytics on the same weights and images.

    python examples/yolo/benchmarks/benchmark.py [--weights yolo11n-pose.pt] [--images 16]

Floor: Ultralytics `predict` of the PyTorch weights in-process, one image at a time. Then our
`/predict` over HTTP (gunicorn as started by start.sh): sequential one task per request; requests
of 8 tasks; 4 concurrent clients. Each mode is warmed up once, then timed `--rounds` times
(median). Prints milliseconds per image and the ratios against the floor. When the server runs the
ONNX export (`YOLO_RUNTIME`, by default on a CPU), raw Ultralytics `predict` of that export is
printed as a second reference, with the ratios against it: they show what HTTP, media reading and
batching add or save on top of the engine. The HTTP client runs on the same machine, so on a small
CPU it takes a share of the cores the floors have to themselves.
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
sys.path.insert(0, os.path.dirname(HERE))

import requests  # noqa: E402
from load import predict, served_backend  # noqa: E402
from utils.models import LoadedModel  # noqa: E402
from utils.runtimes import choose_runtime  # noqa: E402
from yolo_helpers import fetch_pose_model  # noqa: E402

CONFIG = ('<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image" '
          'model_path="{weights}" model_score_threshold="0.5"><Label value="person"/></RectangleLabels></View>')


def benchmark_images(directory: str, count: int) -> list:
    """`count` copies of Ultralytics' bundled bus.jpg / zidane.jpg under distinct names."""
    import ultralytics

    assets = os.path.join(os.path.dirname(ultralytics.__file__), "assets")
    sources = [os.path.join(assets, "bus.jpg"), os.path.join(assets, "zidane.jpg")]
    paths = []
    for i in range(count):
        path = os.path.join(directory, f"img-{i}.jpg")
        shutil.copy(sources[i % 2], path)
        paths.append(path)
    return paths


def per_image(run, images: int, rounds: int) -> float:
    """Median seconds per image of `run()` over `rounds`, after one untimed warm-up round (new batch
    sizes and shapes make PyTorch build new kernels the first time)."""
    run()
    timings = []
    for _ in range(rounds):
        started = time.perf_counter()
        run()
        timings.append((time.perf_counter() - started) / images)
    return statistics.median(timings)


def raw_seconds_per_image(weights: str, runtime: str, paths: list, device: str, rounds: int) -> tuple:
    """The floor: the plain Ultralytics model (PyTorch, or the ONNX export as the server loads it),
    one image per call; and the same model on batches of up to 8 images of one size (the bus and
    the zidane copies apart), which shows what batching alone gains on this device."""
    model = LoadedModel(weights, device, runtime).model
    one_by_one = per_image(lambda: [model.predict(p, conf=0.5, device=device, verbose=False) for p in paths],
                           len(paths), rounds)
    same_size = [group[i:i + 8] for group in (paths[0::2], paths[1::2]) for i in range(0, len(group), 8)]
    batched = per_image(lambda: [model.predict(batch, conf=0.5, device=device, verbose=False) for batch in same_size],
                        len(paths), rounds)
    return one_by_one, batched


def ratios(seconds: float, floors: list) -> str:
    return "  ".join(f"{name} {seconds / floor:.3f}" for name, floor in floors)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=None, help="weights file (default: the COCO yolo11n-pose.pt)")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--device", default=os.getenv("DEVICE", "cpu"))
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per mode (median reported)")
    parser.add_argument("--runtime", default=os.getenv("YOLO_RUNTIME", "auto"), help="YOLO_RUNTIME of the server")
    args = parser.parse_args(argv)

    weights = os.path.abspath(args.weights or fetch_pose_model())
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "models")
        os.makedirs(root)
        os.symlink(weights, os.path.join(root, os.path.basename(weights)))
        paths = benchmark_images(tmp, args.images)
        config = CONFIG.format(weights=os.path.basename(weights))
        tasks = [{"id": i, "data": {"image": p}} for i, p in enumerate(paths)]

        model_dir = os.path.join(tmp, "model_dir")
        os.environ["MODEL_DIR"] = model_dir  # where the ONNX export is cached, for the server too
        served_weights = os.path.join(root, os.path.basename(weights))
        runtime = choose_runtime(served_weights, args.device, args.runtime)
        raw = {name: raw_seconds_per_image(served_weights, name, paths, args.device, args.rounds)
               for name in dict.fromkeys([choose_runtime(served_weights, args.device, "torch"), runtime])}
        floors = [(name, one_by_one) for name, (one_by_one, _) in raw.items()]
        env = {"MODEL_ROOT": root, "MODEL_DIR": model_dir, "DEVICE": args.device, "YOLO_RUNTIME": args.runtime,
               "PREDICT_CONCURRENCY": str(args.clients)}
        with served_backend(env, workers=1, threads=args.clients, log_path=os.path.join(tmp, "server.log")) as (base, _):

            def sequential():
                for task in tasks:
                    assert predict(base, [task], config).status_code == 200

            def batched():
                for start in range(0, len(tasks), 8):
                    assert predict(base, tasks[start:start + 8], config).status_code == 200

            def concurrent():
                with ThreadPoolExecutor(args.clients) as pool:
                    list(pool.map(lambda chunk: [predict(base, [t], config) for t in chunk],
                                  [tasks[i::args.clients] for i in range(args.clients)]))

            sequential_s, batched_s, concurrent_s = (
                per_image(mode, len(tasks), args.rounds) for mode in (sequential, batched, concurrent))
            served = requests.get(base + "/health", timeout=10).json()["loaded_models"]

    print(f"weights: {os.path.basename(weights)}, device: {args.device}, images: {len(paths)}, served as: {served}")
    for name, (one_by_one, batched) in raw.items():
        print(f"raw Ultralytics predict ({name}), one image per call: {one_by_one * 1000:8.1f} ms/image")
        print(f"raw Ultralytics predict ({name}), batches of 8:       {batched * 1000:8.1f} ms/image  "
              f"ratio {batched / one_by_one:.3f}")
    print("ratios against each raw floor (per image; for clients: raw time / served time, i.e. capacity):")
    print(f"/predict sequential, 1 task per request: {sequential_s * 1000:8.1f} ms/image  {ratios(sequential_s, floors)}")
    print(f"/predict 8 tasks per request:            {batched_s * 1000:8.1f} ms/image  {ratios(batched_s, floors)}")
    capacity = "  ".join(f"{name} {floor / concurrent_s:.3f}" for name, floor in floors)
    print(f"/predict {args.clients} concurrent clients:            {concurrent_s * 1000:8.1f} ms/image  capacity {capacity}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Speed and memory of the served backend against every engine's raw Ultralytics on the same weights.

    python examples/yolo/benchmarks/benchmark.py [--weights yolo11n-pose.pt] [--images 16]

Raw figures: Ultralytics `predict` in-process on each engine the server can choose on this device
(PyTorch; on a CPU also ONNX Runtime and OpenVINO on the exports the server loads), one image per
call and in batches of 8 same-size images. Ours: `/predict` over HTTP (gunicorn as start.sh runs
it, `YOLO_RUNTIME` as given, by default `auto`): sequential one task per request; requests of 8
tasks; 4 concurrent clients. Each mode is warmed up once, then all of them, raw and ours, take
turns for `--rounds` rounds (median per mode). Ours are printed as ratios against the fastest raw
engine, each the median of the rounds' own ratios (on a shared machine whose speed drifts, a
ratio compares figures taken side by side), with the targets: sequential <= 1.10x its time per
image, 8 tasks per request <= 1.00x, 4 clients >= 0.95x its capacity (images per second). Last,
the server's resident memory idle and after a first predict, with each engine and with the
`YOLO_RUNTIME` given (for `auto`: its race is remembered from the timed server, so this is the
engine it chose). The HTTP client runs on the same machine, so on a small
CPU it takes a share of the cores the raw figures have to themselves: the timed clients are lean
(`load.LeanClient`), and the sequential requests are sent once more with `requests` to show
what a heavier client adds.
"""

import argparse
import glob
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
sys.path.insert(0, os.path.dirname(HERE))

import requests  # noqa: E402
from label_studio_ml.settings import Settings  # noqa: E402
from load import LeanClient, predict, predict_body, process_tree_rss, served_backend  # noqa: E402
from utils.inference import LoadedModel  # noqa: E402
from utils.runtimes import ENGINE_NAMES, EXPORTS, engine_available, exports_dir  # noqa: E402
from utils.ultralytics_env import prepare_ultralytics  # noqa: E402
from yolo_helpers import fetch_pose_model  # noqa: E402

CONFIG = ('<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image" '
          'model_path="{weights}" model_score_threshold="0.5">{labels}</RectangleLabels></View>')
PERSON = '<Label value="person"/>'
MIB = 1 << 20
# (mode, the most (≤) or the least (≥) its ratio against the fastest raw engine may be)
TARGETS = {"sequential": ("<=", 1.10), "8 tasks": ("<=", 1.00), "clients": (">=", 0.95)}


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


def interleaved_rounds(runs: Dict[str, Callable[[], Optional[float]]], images: int, rounds: int) -> Dict[str, list]:
    """Seconds per image of each of `runs` (each handles `images` images) in each round, after one
    untimed warm-up each (new batch sizes and shapes make engines build new kernels the first
    time). The runs take turns round after round, so that a machine growing slower or faster
    meanwhile (a shared VM does) weighs on the raw figures and ours alike. A run that does work of
    its own around what it measures times itself: it returns the seconds that count (a float;
    anything else it returns is ignored)."""
    for run in runs.values():
        run()
    timings: Dict[str, list] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            started = time.perf_counter()
            timed_itself = run()
            seconds = timed_itself if isinstance(timed_itself, float) else time.perf_counter() - started
            timings[name].append(seconds / images)
    return timings


def medians(rounds: Dict[str, list]) -> Dict[str, float]:
    return {name: statistics.median(values) for name, values in rounds.items()}


def interleaved_per_image(runs: Dict[str, Callable[[], Optional[float]]], images: int, rounds: int) -> Dict[str, float]:
    """Median seconds per image of each of `runs` over `interleaved_rounds`."""
    return medians(interleaved_rounds(runs, images, rounds))


def paired_ratio(ours: list, floor: list) -> float:
    """Median over the rounds of ours / the floor measured in the same round: side by side figures,
    so a round on a slower machine weighs on both."""
    return statistics.median(a / b for a, b in zip(ours, floor))


def engines(device: str) -> list:
    """The engines the server may run on `device`: PyTorch, and on a CPU the exported ones installed."""
    return ["torch"] + ([r for r in EXPORTS if engine_available(r)] if device == "cpu" else [])


def raw_runs(weights: str, runtime: str, paths: list, device: str, model_dir: str) -> Dict[str, Callable[[], None]]:
    """Plain Ultralytics on one engine (the model as the server loads it, exported under
    `model_dir` as the server's are): one image per call; and the same model on batches of up to 8
    images of one size (the bus and the zidane copies apart), which shows what batching alone gains
    on this device."""
    model = LoadedModel(weights, device, runtime, exports_dir(model_dir)).model
    same_size = [group[i:i + 8] for group in (paths[0::2], paths[1::2]) for i in range(0, len(group), 8)]
    def one_per_call() -> None:
        for path in paths:
            model.predict(path, conf=0.5, device=device, verbose=False)

    def batched() -> None:
        for batch in same_size:
            model.predict(batch, conf=0.5, device=device, verbose=False)

    return {f"raw {runtime}": one_per_call, f"raw {runtime} batched": batched}


def seconds_in_app(base: str, session) -> Tuple[int, float]:
    """(requests, seconds) `/predict` has spent inside the app so far, from Flask receiving each
    request to its answer being ready (the server's `/metrics`)."""
    figures = session.get(base + "/metrics", timeout=10).json()["endpoints"].get("/predict")
    return (figures["requests"], figures["latency_seconds"]["mean"] * figures["requests"]) if figures else (0, 0.0)


def served_runs(base: str, tasks: list, config: str, clients: int, in_app: list) -> Dict[str, Callable[[], Optional[float]]]:
    """`/predict`: sequential one task per request, 8 tasks per request, `clients` concurrent
    clients of one task per request, sent by `LeanClient`s (bodies encoded beforehand, one
    kept-alive connection per client and run: the figures are the server's, not TCP set-up's or a
    client library's); and the sequential requests again from `requests` (the library Label
    Studio's ML client uses), which shows what a heavier client costs on this machine. Each
    sequential round appends to `in_app` the seconds per request spent inside the app (the rest is
    HTTP and the client), read from `/metrics` before and after its requests, outside its timing."""
    session = requests.Session()
    one_each = [predict_body([task], config) for task in tasks]
    eights = [predict_body(tasks[start:start + 8], config) for start in range(0, len(tasks), 8)]

    def post_all(bodies: list) -> None:
        with LeanClient(base) as client:
            for body in bodies:
                status, answer = client.post("/predict", body)
                assert status == 200, answer[:300]

    def sequential() -> float:
        before = seconds_in_app(base, session)  # untimed: only the requests count
        started = time.perf_counter()
        post_all(one_each)
        seconds = time.perf_counter() - started
        after = seconds_in_app(base, session)
        in_app.append((after[1] - before[1]) / (after[0] - before[0]))
        return seconds

    def with_requests():
        for task in tasks:
            assert predict(base, [task], config, session=session).status_code == 200

    def concurrent():
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(post_all, [one_each[i::clients] for i in range(clients)]))

    return {"sequential": sequential, "8 tasks": lambda: post_all(eights), "clients": concurrent,
            "sequential, requests": with_requests}


def served_rss(env: dict, runtime: str, task: dict, config: str) -> tuple:
    """Resident memory (bytes) of a fresh server with `YOLO_RUNTIME=runtime`: idle, and after its
    first predict (the model loaded, its engine started)."""
    with served_backend({**env, "YOLO_RUNTIME": runtime}, workers=1) as (base, process):
        idle = process_tree_rss(process.pid)
        assert predict(base, [task], config).status_code == 200
        return idle, process_tree_rss(process.pid)


def race_figures(model_dir: str) -> str:
    """What the server's race measured (ms per predict per engine), when it ran one."""
    races = glob.glob(os.path.join(model_dir, "exports", "*.race.json"))
    if not races:
        return "no race (YOLO_RUNTIME is not auto, or not on a CPU)"
    with open(races[0]) as file:
        race = json.load(file)
    figures = ", ".join(f"{ENGINE_NAMES[r]} {ms} ms" for r, ms in race["ms_per_predict"].items())
    return f"{figures} ({race['imgsz']}-pixel synthetic image): {ENGINE_NAMES[race['fastest']]}"


def verdict(mode: str, ratio: float) -> str:
    comparison, bound = TARGETS[mode]
    met = ratio <= bound if comparison == "<=" else ratio >= bound
    return f"target {comparison} {bound:.2f}: {'met' if met else 'MISSED'}"


def report(weights: str, device: str, images: int, clients: int, served: list, race: str, raw: dict, ours: dict,
           rounds: dict, rss: dict) -> None:
    """`raw` and `ours`: median seconds per image; `rounds`: each run's per round, for the ratios."""
    print(f"weights: {weights}, device: {device}, images: {images}, served as: {served}")
    print(f"server's race: {race}")
    for name, (one_by_one, batched) in raw.items():
        print(f"raw Ultralytics predict ({ENGINE_NAMES[name]:>12}), one image per call: {one_by_one * 1000:8.1f} "
              f"ms/image; batches of 8: {batched * 1000:8.1f} ms/image (ratio {batched / one_by_one:.3f})")
    fastest = min(raw, key=lambda name: raw[name][0])
    floor, floor_rounds = raw[fastest][0], rounds[f"raw {fastest}"]
    print(f"ours against the fastest raw engine, {ENGINE_NAMES[fastest]} ({floor * 1000:.1f} ms/image); ratios are "
          f"medians of the rounds' own ratios:")
    for mode, label in (("sequential", "/predict sequential, 1 task per request"),
                        ("8 tasks", "/predict 8 tasks per request")):
        ratio = paired_ratio(rounds[mode], floor_rounds)
        print(f"{label}: {ours[mode] * 1000:8.1f} ms/image  {ratio:.3f} x  {verdict(mode, ratio)}")
        if mode == "sequential":
            print(f"  of which inside the app (Flask receiving the request to the answer ready): "
                  f"{ours['sequential in app'] * 1000:.1f} ms; HTTP and the client: "
                  f"{(ours['sequential'] - ours['sequential in app']) * 1000:.1f} ms")
            print(f"  the same requests sent with the requests library: {ours['sequential, requests'] * 1000:.1f} "
                  f"ms/image  {paired_ratio(rounds['sequential, requests'], floor_rounds):.3f} x (no target: the "
                  f"client's own cost)")
    capacity = paired_ratio(floor_rounds, rounds["clients"])
    print(f"/predict {clients} concurrent clients:           {ours['clients'] * 1000:8.1f} ms/image  "
          f"capacity {capacity:.3f} x  {verdict('clients', capacity)}")
    for name, (idle, loaded) in rss.items():
        print(f"server RSS with {ENGINE_NAMES.get(name, 'YOLO_RUNTIME=' + name):>12}: idle {idle / MIB:7.1f} MiB, "
              f"after a first predict {loaded / MIB:7.1f} MiB")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=None, help="weights file (default: the COCO yolo11n-pose.pt)")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--device", default=os.getenv("DEVICE", "cpu"))
    parser.add_argument("--rounds", type=int, default=3,
                        help="timed rounds, every mode once per round (medians reported)")
    parser.add_argument("--runtime", default=os.getenv("YOLO_RUNTIME", "auto"), help="YOLO_RUNTIME of the server")
    args = parser.parse_args(argv)

    weights = os.path.abspath(args.weights or fetch_pose_model())
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = os.path.join(tmp, "model_dir")  # where the exports are cached, for the servers too
        prepare_ultralytics(Settings(model_dir=model_dir))  # before this process imports Ultralytics
        root = os.path.join(tmp, "models")
        os.makedirs(root)
        os.symlink(weights, os.path.join(root, os.path.basename(weights)))
        paths = benchmark_images(tmp, args.images)
        config = CONFIG.format(weights=os.path.basename(weights), labels=PERSON)
        tasks = [{"id": i, "data": {"image": p}} for i, p in enumerate(paths)]

        served_weights = os.path.join(root, os.path.basename(weights))
        env = {"MODEL_ROOT": root, "MODEL_DIR": model_dir, "DEVICE": args.device, "YOLO_RUNTIME": args.runtime,
               "PREDICT_CONCURRENCY": str(args.clients)}
        log = os.path.join(tmp, "server.log")
        names = engines(args.device)
        in_app: list = []
        with served_backend(env, workers=1, threads=args.clients, log_path=log) as (base, _):
            runs = served_runs(base, tasks, config, args.clients, in_app)
            for name in names:
                runs.update(raw_runs(served_weights, name, paths, args.device, model_dir))
            rounds = interleaved_rounds(runs, len(paths), args.rounds)
            served = requests.get(base + "/health", timeout=10).json()["loaded_models"]
        timed = medians(rounds)
        raw = {name: (timed[f"raw {name}"], timed[f"raw {name} batched"]) for name in names}
        ours = {mode: timed[mode] for mode in ("sequential", "8 tasks", "clients", "sequential, requests")}
        ours["sequential in app"] = statistics.median(in_app[1:])  # the first round is the warm-up
        race = race_figures(model_dir)
        rss = {name: served_rss(env, name, tasks[0], config) for name in dict.fromkeys([*raw, args.runtime])}

    report(os.path.basename(weights), args.device, len(paths), args.clients, served, race, raw, ours, rounds, rss)
    return 0


if __name__ == "__main__":
    sys.exit(main())

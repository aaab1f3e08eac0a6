"""Which engine runs a model's forward pass, and the exported copies that needs.

On a CPU, ONNX Runtime and OpenVINO run the same YOLO network 2-2.5x faster than PyTorch (nano
pose model, 2-core EPYC; README "Performance"), and which of the two wins depends on the CPU and
the model. So by default (`YOLO_RUNTIME=auto`) PyTorch weights served on a CPU are exported once
to each engine's format and the engine that answers fastest on this machine serves them, through
Ultralytics' own backends: the same pre- and post-processing, outputs equal to PyTorch's up to
float rounding. The race (a few warm-up predicts per engine on a synthetic image of the model's
size) runs once per weights file, in a process of its own, and is remembered beside the exports,
with the machine and the engine versions it was measured with; a failing engine is skipped, and
the figures and reasons are logged.

Exports have dynamic batch and image sizes, so rectangular letterboxing and batching work as with
PyTorch. They are cached under `MODEL_DIR/exports`, named by the weights' path and content and the
Ultralytics and converter versions, so a changed file or a new library exports anew, and several
workers or restarts export once. If an export fails, or does not load, PyTorch serves (logged).

`YOLO_RUNTIME=torch` keeps PyTorch everywhere; `onnx` / `openvino` ask for that engine on any
device (for CUDA, ONNX needs onnxruntime-gpu). On CUDA `auto` is PyTorch, with `YOLO_HALF=true`
in FP16. Weights that are not `.pt` files are served as they are.
"""

import functools
import glob
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from label_studio_ml.exceptions import MLBackendError
from utils.files import atomic_write, content_digest, exclusive
from utils.lanes import usable_cores

logger = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "onnx", "openvino")
FASTEST = "fastest"  # what `auto` means on a CPU: the engine measured fastest when the model loads
ENGINE_NAMES = {"torch": "PyTorch", "onnx": "ONNX Runtime", "openvino": "OpenVINO"}
# Per exported runtime: the package that runs it, the package that converts to it (its version
# names the export), Ultralytics' export arguments, and how the export's file or folder ends.
EXPORTS = {
    "onnx": {"engine": "onnxruntime", "converter": "onnx", "suffix": ".onnx",
             "args": {"format": "onnx", "dynamic": True, "simplify": True}},
    "openvino": {"engine": "openvino", "converter": "openvino", "suffix": "_openvino_model",
                 "args": {"format": "openvino", "dynamic": True}},
}
# Turns of the race: predicts per engine that warm up (first calls build kernels), then timed ones.
RACE_WARMUP_TURNS, RACE_TURNS = 2, 5


def engine_available(runtime: str) -> bool:
    """Whether the package that runs `runtime` is installed (found, not imported: importing an
    engine costs memory a server that does not use it should not pay)."""
    return runtime == "torch" or importlib.util.find_spec(EXPORTS[runtime]["engine"]) is not None


def choose_runtime(path: str, device: str, requested: str) -> str:
    """`torch`, `onnx` or `openvino` for PyTorch weights at `path` on `device`, as `requested`
    (`YOLO_RUNTIME`), or `fastest` (`auto` on a CPU: decided by measurement when the model loads);
    `native` for other formats."""
    if requested not in RUNTIMES:
        raise MLBackendError(f"YOLO_RUNTIME={requested!r} is not one of {', '.join(RUNTIMES)}")
    if not path.endswith(".pt"):
        return "native"
    if requested == "auto":
        return FASTEST if device == "cpu" else "torch"
    if requested in EXPORTS and not engine_available(requested):
        package = EXPORTS[requested]["engine"]
        raise MLBackendError(f"YOLO_RUNTIME={requested}, but {package} is not installed (pip install {package})")
    return requested


def half_precision(device: str, wanted: bool) -> bool:
    """FP16 inference when `wanted` (`YOLO_HALF`), on CUDA only (a CPU has no fast FP16 path in PyTorch)."""
    return wanted and device.startswith("cuda")


def exports_dir(model_dir: str) -> str:
    return os.path.join(model_dir, "exports")


@contextmanager
def quiet_ultralytics():
    """Drop Ultralytics' INFO lines logged by this thread meanwhile (its export report: CLI hints,
    a netron link, temporary paths); warnings and errors, and other threads' lines, still pass."""
    thread = threading.get_ident()

    def keep(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.thread != thread

    ultralytics_logger = logging.getLogger("ultralytics")
    ultralytics_logger.addFilter(keep)
    try:
        yield
    finally:
        ultralytics_logger.removeFilter(keep)


def export_key(weights: str) -> str:
    """`<stem>-<hash of its path>`: what names one weights file among the exports (two `best.pt`
    in different folders of MODEL_ROOT are two files)."""
    stem = os.path.splitext(os.path.basename(weights))[0]
    return f"{stem}-{hashlib.sha256(os.path.abspath(weights).encode()).hexdigest()[:8]}"


def package_version(module: str) -> str:
    """Installed version of the distribution that provides `module` (found without importing it;
    `onnxruntime` may come from onnxruntime-gpu, `ultralytics` from ultralytics-opencv-headless)."""
    distributions = importlib.metadata.packages_distributions().get(module) or [module]
    return importlib.metadata.version(distributions[0])


def export_path(weights: str, runtime: str, directory: str) -> str:
    """`<key>-<content digest>-ultralytics<version>-<converter><version><suffix>` in `directory`
    (the exports)."""
    import ultralytics

    converter = EXPORTS[runtime]["converter"]
    name = (f"{export_key(weights)}-{content_digest(weights)}-ultralytics{ultralytics.__version__}"
            f"-{converter}{package_version(converter)}{EXPORTS[runtime]['suffix']}")
    return os.path.join(directory, name)


def export(weights: str, runtime: str, directory: str) -> str:
    """Path of the `runtime` export of `weights` (a file, or OpenVINO's folder) in `directory`
    (the exports), exporting it first when it has none. One process at a time exports a given
    weights file; the others wait and take its export."""
    target = export_path(weights, runtime, directory)
    if os.path.exists(target):
        return target
    key = export_key(weights)
    os.makedirs(directory, exist_ok=True)
    with exclusive(os.path.join(directory, key)):
        if not os.path.exists(target):  # not exported by another worker while this one waited
            _export(weights, runtime, key, target)
            remove_stale(key, keep=target, suffix=EXPORTS[runtime]["suffix"])
    return target


def _export(weights: str, runtime: str, key: str, target: str) -> None:
    from ultralytics import YOLO as UltralyticsYOLO

    target_dir = os.path.dirname(target)
    for leftover in glob.glob(os.path.join(target_dir, key + ".tmp-*")):  # of an export that crashed
        shutil.rmtree(leftover, ignore_errors=True)
    engine = ENGINE_NAMES[runtime]
    logger.info("Exporting %s for %s (once; cached as %s)", os.path.basename(weights), engine, target)
    # Ultralytics writes the export next to the weights it loaded: a link in a private directory
    # keeps MODEL_ROOT untouched.
    workdir = tempfile.mkdtemp(prefix=key + ".tmp-", dir=target_dir)
    started = time.monotonic()
    try:
        link = os.path.join(workdir, os.path.basename(weights))
        os.symlink(os.path.abspath(weights), link)
        with quiet_ultralytics():
            exported = UltralyticsYOLO(link).export(device="cpu", **EXPORTS[runtime]["args"])
        os.replace(exported.rstrip(os.sep), target)  # a folder for OpenVINO: renamed whole, atomically
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    logger.info("Exported %s for %s in %.1f s", os.path.basename(weights), engine, time.monotonic() - started)


def remove_stale(key: str, keep: str, suffix: str) -> None:
    """Exports (or races) of earlier contents of the same weights file (retrained, replaced), or
    made by earlier libraries: nothing reads them any more. Processes that still serve an export
    keep working (the engine read it when it loaded)."""
    stale = re.compile(re.escape(key) + r"-[0-9a-f]{16}[^/]*" + re.escape(suffix))
    for name in os.listdir(os.path.dirname(keep)):
        path = os.path.join(os.path.dirname(keep), name)
        if stale.fullmatch(name) and path != keep:
            logger.info("Removing stale export %s", name)
            discard(path)


def remove_exports(weights: str, directory: str) -> None:
    """Every export and race record in `directory` (the exports) of the weights file at `weights`
    (a trained version that no longer serves: they would stay on disk for good otherwise). Taken
    under its export lock, so an export under way elsewhere finishes first."""
    if not os.path.isdir(directory):
        return
    key = export_key(weights)
    made_from = re.compile(re.escape(key) + r"-[0-9a-f]{16}[^/]*")
    with exclusive(os.path.join(directory, key)):
        for name in os.listdir(directory):
            if made_from.fullmatch(name):
                logger.info("Removing export %s of %s: no longer serving", name, weights)
                discard(os.path.join(directory, name))


def discard(path: str) -> None:
    """Remove an export: a file, or OpenVINO's folder."""
    try:
        if os.path.isdir(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
    except OSError as exc:
        logger.warning("Cannot remove export %s: %s", path, exc)


Runner = Callable[[Callable[[], Any]], Any]  # runs a function where the engine will serve, returns its result


def exported_model(weights_model, path: str, runtime: str, device: str, run_on: Runner, directory: str) -> tuple:
    """(export path, Ultralytics model on it): the `runtime` export (cached in `directory`) of the
    weights at `path` (`weights_model` loaded), its engine started by `run_on` (on the thread that
    will run it). Raises when the export fails or does not load; an export that does not load is
    discarded, so the next load exports anew."""
    target = export(path, runtime, directory)
    try:
        return target, load_export(target, runtime, weights_model, device, run_on)
    except Exception:
        discard(target)
        raise


def load_export(target: str, runtime: str, weights_model, device: str, run_on: Runner, threads: int = 0):
    """Ultralytics model on the export at `target` of `weights_model` (a model with its task and
    image size: the weights, or a model on their export), its engine started by `run_on` with
    `threads` threads (0: the engine's default, every core). Raises when it does not load."""
    from ultralytics import YOLO as UltralyticsYOLO

    model = UltralyticsYOLO(target, task=weights_model.task)
    if runtime == "openvino":
        xml = glob.glob(os.path.join(target, "*.xml"))[0]
        model.add_callback("on_predict_start", functools.partial(compile_as_served, xml=xml, threads=threads))
    elif threads:
        model.add_callback("on_predict_start", functools.partial(onnx_with_threads, onnx=target, threads=threads))
    # PyTorch weights predict at the image size they were trained at; a dynamic export
    # would otherwise use Ultralytics' default of 640.
    if "imgsz" in weights_model.overrides:
        model.overrides["imgsz"] = weights_model.overrides["imgsz"]
    # Ultralytics starts the engine on the first predict: start it now, so that an export that
    # does not load fails here instead of failing every request.
    run_on(functools.partial(model.predict, np.zeros((32, 32, 3), np.uint8), device=device, verbose=False))
    return model


def compile_as_served(predictor, xml: str, threads: int = 0) -> None:
    """Ultralytics callback at the start of every predict and track (each predictor Ultralytics
    makes starts its own OpenVINO model): OpenVINO computes in bfloat16 on CPUs that can (AMX,
    AVX512-BF16), faster but with answers unlike PyTorch's (masks off by several percent), and
    Ultralytics passes no precision setting; a lane's engine gets `threads` threads. So its model
    (`xml`) is compiled again, once, in float32 (and with `threads` threads)."""
    backend = predictor.model.backend  # Ultralytics' OpenVINOBackend
    compiled = backend.ov_compiled_model
    if compiled.get_property("INFERENCE_PRECISION_HINT") == backend.ov.Type.f32 and \
            (not threads or compiled.get_property("INFERENCE_NUM_THREADS") == threads):
        return
    config = {"INFERENCE_PRECISION_HINT": "f32", **({"INFERENCE_NUM_THREADS": threads} if threads else {})}
    compile_model = backend.compile_model  # functools.partial(core.compile_model, device_name=, config=)
    backend.compile_model = functools.partial(compile_model, config={**compile_model.keywords["config"], **config})
    backend.ov_compiled_model = backend.compile_model(xml)


def onnx_with_threads(predictor, onnx: str, threads: int) -> None:
    """Ultralytics callback at the start of every predict of a lane's ONNX Runtime engine: its
    session (Ultralytics makes it with every core) made again, once, with `threads` threads."""
    import onnxruntime

    backend = predictor.model.backend  # Ultralytics' ONNXBackend
    if backend.session.get_session_options().intra_op_num_threads == threads:
        return
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    backend.session = onnxruntime.InferenceSession(onnx, options, providers=["CPUExecutionProvider"])


def model_imgsz(weights_model) -> int:
    imgsz = weights_model.overrides.get("imgsz") or 640
    return int(max(imgsz) if isinstance(imgsz, (list, tuple)) else imgsz)


def timed_predict(model, image: np.ndarray, device: str) -> float:
    started = time.perf_counter()
    model.predict(image, device=device, verbose=False)
    return time.perf_counter() - started


def race(models: Dict[str, object], device: str, imgsz: int, name: str) -> Dict[str, float]:
    """Best seconds of one `predict` of a synthetic `imgsz` square image, per engine. The engines
    take turns (ABCABC...), so that other work on the machine meanwhile slows them all alike, and
    the fastest of each one's timed turns counts (what it does when the cores are its own). The
    first turns warm up (first calls build kernels). An engine whose predict fails drops out."""
    image = np.random.default_rng(0).integers(0, 256, (imgsz, imgsz, 3), dtype=np.uint8)
    timings: Dict[str, list] = {runtime: [] for runtime in models}
    for turn in range(RACE_WARMUP_TURNS + RACE_TURNS):
        for runtime in list(timings):
            try:
                seconds = timed_predict(models[runtime], image, device)
            except Exception as exc:
                log_skipped(name, runtime, exc)
                del timings[runtime]
                continue
            if turn >= RACE_WARMUP_TURNS:
                timings[runtime].append(seconds)
    return {runtime: min(seconds) for runtime, seconds in timings.items()}


def log_skipped(name: str, runtime: str, exc: Exception) -> None:
    logger.warning("%s: %s skipped: %s: %s", name, ENGINE_NAMES[runtime], type(exc).__name__, exc)


def race_here(path: str, directory: str) -> Dict[str, float]:
    """Seconds per predict of every CPU engine installed that loads the weights at `path`, raced in
    this process (exports cached in `directory`); engines that fail are logged with the reason and
    left out. `race_in_child` runs it in a process of its own."""
    from ultralytics import YOLO as UltralyticsYOLO

    name = os.path.basename(path)
    weights_model = UltralyticsYOLO(path)
    models = {"torch": weights_model}
    with ThreadPoolExecutor(max_workers=1) as thread:  # the engines start, and are timed, on one thread

        def run_on(work):
            return thread.submit(work).result()

        for runtime in EXPORTS:
            if not engine_available(runtime):
                logger.info("%s: %s not measured: %s is not installed", name, ENGINE_NAMES[runtime],
                            EXPORTS[runtime]["engine"])
                continue
            try:
                models[runtime] = exported_model(weights_model, path, runtime, "cpu", run_on, directory)[1]
            except Exception as exc:
                log_skipped(name, runtime, exc)
        return run_on(functools.partial(race, models, "cpu", model_imgsz(weights_model), name))


def race_in_child(path: str, directory: str) -> Dict[str, float]:
    """`race_here` in a new Python process (`python -m utils.runtimes`, which imports nothing of
    the server's own script), its log lines logged here. The serving process then holds only the
    engine that won: the others' thread pools, left in it, would take CPU time from every later
    request, and an engine that crashes takes down only the race."""
    with tempfile.TemporaryDirectory(prefix="yolo-race-") as scratch:
        outcome_file = os.path.join(scratch, "outcome.json")
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        finished = subprocess.run([sys.executable, "-m", "utils.runtimes", path, directory, outcome_file],
                                  env=environment, stdin=subprocess.DEVNULL)
        try:
            with open(outcome_file) as file:
                outcome = json.load(file)
        except (OSError, ValueError):
            raise RuntimeError(f"the race's process ended with exit code {finished.returncode}") from None
    for level, line in outcome["lines"]:
        logger.log(level, "%s", line)
    if outcome.get("error"):
        raise RuntimeError(outcome["error"])
    return outcome["timings"]


def _race_as_child(path: str, directory: str, outcome_file: str) -> None:
    """The race's own process: `race_here`, its figures (or what went wrong) and the lines it
    logged meanwhile written to `outcome_file` for the parent."""
    from utils.ultralytics_env import block_openvino_telemetry

    block_openvino_telemetry()  # the environment came with the process; this did not
    lines: List[Tuple[int, str]] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append((record.levelno, record.getMessage()))

    logger.setLevel(logging.INFO)
    logger.addHandler(Collect())
    logger.propagate = False
    outcome: dict = {"timings": {}, "lines": lines}
    try:
        outcome["timings"] = race_here(path, directory)
    except Exception as exc:
        outcome["error"] = f"{type(exc).__name__}: {exc}"
    with open(outcome_file, "w") as file:
        json.dump(outcome, file)


def race_conditions() -> dict:
    """What a race's result depends on besides the weights: the CPU, the cores this process may
    use, the libraries' versions. A MODEL_DIR moved to another machine, or an upgrade, races again."""
    model_name = platform.processor()
    if os.path.isfile("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as cpuinfo:
            model_name = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
                              model_name)
    cores = usable_cores()
    packages = ["torch", "ultralytics"] + [EXPORTS[r]["engine"] for r in EXPORTS if engine_available(r)]
    return {"cpu": model_name, "cores": cores, "versions": {p: package_version(p) for p in packages}}


def race_path(weights: str, directory: str) -> str:
    return os.path.join(directory, f"{export_key(weights)}-{content_digest(weights)}.race.json")


def remembered_race(path: str) -> Optional[str]:
    """The engine a race on this machine chose, or None (no race yet, another machine or
    versions, an unreadable file)."""
    try:
        with open(path) as file:
            race = json.load(file)
    except (OSError, ValueError):
        return None
    return race.get("fastest") if race.get("conditions") == race_conditions() else None


def fastest_runtime(weights_model, path: str, directory: str) -> str:
    """The engine that answers fastest for the weights at `path` (`weights_model` loaded) on this
    CPU: remembered from an earlier race (beside the exports in `directory`), or raced now (once
    among threads and processes, in a process of its own); PyTorch if all others fail, or if the
    race does."""
    record = race_path(path, directory)
    fastest = remembered_race(record)
    if fastest:
        return fastest
    os.makedirs(directory, exist_ok=True)
    with exclusive(os.path.join(directory, export_key(path) + "-race")):
        fastest = remembered_race(record)
        if fastest:
            return fastest
        try:
            timings = race_in_child(path, directory)
        except Exception as exc:  # the race's process died (an engine crashed, out of memory): not remembered
            logger.error("%s: the race of engines failed (%s: %s); PyTorch serves it", os.path.basename(path),
                         type(exc).__name__, exc)
            return "torch"
        fastest = min(timings, key=timings.get) if timings else "torch"
        race = {"fastest": fastest, "ms_per_predict": {r: round(s * 1000, 2) for r, s in timings.items()},
                "imgsz": model_imgsz(weights_model), "conditions": race_conditions()}
        atomic_write(record, lambda file: file.write(json.dumps(race, indent=1).encode()))
        remove_stale(export_key(path), keep=record, suffix=".race.json")
        logger.info("%s on this CPU, ms per %d-pixel image: %s: %s serves it (remembered in %s)",
                    os.path.basename(path), race["imgsz"],
                    ", ".join(f"{ENGINE_NAMES[r]} {ms}" for r, ms in race["ms_per_predict"].items()),
                    ENGINE_NAMES[fastest], record)
    return fastest


if __name__ == "__main__":  # the race's process (race_in_child)
    _race_as_child(*sys.argv[1:4])

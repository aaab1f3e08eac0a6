"""Running YOLO weights: loaded lazily, shared, and called from one thread per device.

- Loading: once per (file, device, runtime), under a per-file lock so concurrent first requests
  load it once; other models stay usable meanwhile.
- Runtime: PyTorch, or on a CPU by default the fastest of ONNX Runtime and OpenVINO on a cached
  export, by measurement (runtimes.py).
- Inference: Ultralytics predictors keep per-call state and are not thread-safe, and PyTorch on
  a CPU runs best from one thread (each calling thread gets its own OpenMP pool, and idle pools
  spin against the busy one). So model calls run on a device's inference threads, never on the
  request threads, which hand their batches over and wait: one wide thread (every core), and on a
  CPU under load lanes that predict side by side with a share of the cores each (lanes.py).

The registry and the inference threads are process-wide; how a backend runs its weights (its
`InferenceOptions`: device, runtime, FP16, batch size, where exports go) comes from its settings
and is passed with each call.
"""

import functools
import itertools
import logging
import os
import threading
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

from label_studio_ml.exceptions import LabelConfigError, ModelUnavailable
from label_studio_ml.settings import Settings
from utils.lanes import DeviceLanes, usable_cores
from utils.runtimes import (ENGINE_NAMES, EXPORTS, FASTEST, choose_runtime, exported_model, exports_dir,
                            fastest_runtime, half_precision, load_export)
from utils.settings import YoloSettings
from utils.weights import available_models_text, is_sam_weights, resolve_model_path

logger = logging.getLogger(__name__)


def select_device(wanted: str) -> str:
    """`wanted` (`DEVICE`: `cpu`, `cuda`, `cuda:1`, `mps`), else CUDA when available, else CPU."""
    if wanted:
        return wanted
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class InferenceOptions:
    """How a backend runs weights, from its settings: passed to the process-wide registry and
    to each model call, so that what is loaded and run follows the caller's settings."""

    device: str        # resolved: `cpu`, `cuda:0`, ...
    runtime: str       # as asked (`YOLO_RUNTIME`): auto, torch, onnx, openvino
    half: bool         # `YOLO_HALF`: FP16 with PyTorch on CUDA
    batch_size: int    # images (or video frames) per model call
    exports_dir: str   # where exports and engine races are cached (`MODEL_DIR/exports`)
    cpu_lanes: int = 0  # `YOLO_CPU_LANES`: calls predicting side by side on a CPU under load

    @classmethod
    def from_settings(cls, yolo: YoloSettings, settings: Settings) -> "InferenceOptions":
        return cls(device=select_device(yolo.device), runtime=yolo.yolo_runtime, half=yolo.yolo_half,
                   batch_size=yolo.yolo_batch_size, exports_dir=exports_dir(settings.model_dir),
                   cpu_lanes=yolo.yolo_cpu_lanes)


_devices: Dict[str, DeviceLanes] = {}
_devices_lock = threading.Lock()


def device_threads(device: str, cpu_lanes: int = 0) -> DeviceLanes:
    """The inference threads of `device`, made on first use: on a CPU with `cpu_lanes` lanes (at
    most one per core; fewer than two is none). The first caller decides: one server, one setting."""
    with _devices_lock:
        if device not in _devices:
            lanes = min(cpu_lanes, usable_cores()) if device == "cpu" else 0
            _devices[device] = DeviceLanes(device, lanes if lanes >= 2 else 0)
        return _devices[device]


class LaneUnavailable(Exception):
    """A lane's engine of a model did not load (logged where it failed)."""


class LoadedModel:
    """One Ultralytics model on one device, run by PyTorch or by an exported engine (see
    runtimes.py; exports cached in `exports_dir`); its calls run on the device's inference threads
    (`cpu_lanes`: see `device_threads`), an exported engine's predictions on a lane on an engine of
    that lane's own."""

    def __init__(self, path: str, device: str, runtime: str, exports_dir: str, half: bool = False,
                 cpu_lanes: int = 0):
        weights = self._load_weights(path)
        self.path = path
        self.name = os.path.basename(path)
        self.device = device
        self.threads = device_threads(device, cpu_lanes)
        self.export: Optional[str] = None  # the export file or folder the engine runs, if any
        self._lane_models: Dict[int, object] = {}  # lane -> engine, each used by its lane's thread only
        self._lanes_failed = False  # a lane's engine did not load: this model predicts wide only
        self.task = weights.task
        self.names: Dict[int, str] = {} if is_sam_weights(path) else dict(weights.names)  # SAM has no classes
        self.runtime, self.model = self._for_runtime(weights, runtime, exports_dir)
        if self.runtime == "torch" and half_precision(device, half):
            self.model.overrides["half"] = True  # read by every predict and track call
        logger.info("Loaded %s (task %s) on %s with %s; class names: %s", self.name, self.task, device,
                    self.runtime, list(self.names.values()))

    @staticmethod
    def _load_weights(path: str):
        from ultralytics import SAM, YOLO as UltralyticsYOLO

        existed = os.path.isfile(path)
        try:
            return SAM(path) if is_sam_weights(path) else UltralyticsYOLO(path)
        except Exception as exc:
            if not existed:  # Ultralytics' own message is about its download; ours says what to do
                logger.error("Downloading %s failed: %s: %s", os.path.basename(path), type(exc).__name__, exc)
                raise ModelUnavailable(
                    f"{os.path.basename(path)} is not in MODEL_ROOT and could not be downloaded (no internet "
                    f"access?): copy the weights there or set model_path to a file that is there; "
                    f"{available_models_text(os.path.dirname(path))}"
                ) from exc
            raise LabelConfigError(f"Cannot load model {os.path.basename(path)}: {type(exc).__name__}: {exc}") from exc

    def _for_runtime(self, weights, runtime: str, exports: str) -> tuple:
        """(runtime name, Ultralytics model that runs it): the loaded weights themselves, or an
        export (cached in `exports`); the weights (PyTorch) when the export fails or does not load."""
        if runtime == FASTEST:
            runtime = fastest_runtime(weights, self.path, exports)
        if runtime not in EXPORTS:
            return runtime, weights
        try:
            self.export, model = exported_model(weights, self.path, runtime, self.device, self.threads.run, exports)
            return runtime, model
        except Exception as exc:
            logger.warning("%s: no %s model (%s: %s); PyTorch serves it instead", self.name, ENGINE_NAMES[runtime],
                           type(exc).__name__, exc)
            return "torch", weights

    def predict(self, images: list, batch_size: int, **kwargs) -> list:
        """Ultralytics `predict` over `images` (arrays), in chunks of `batch_size` (`YOLO_BATCH_SIZE`).

        Images are grouped by shape first: Ultralytics letterboxes a batch of equal shapes to the
        smallest padded size, but pads a mixed batch to a full square, which costs more than
        batching saves on a CPU. On a CPU with lanes, images that come alone (no other call
        waiting) are dealt out among all the lanes like cards, in shape order, so that the lanes
        get equal work and finish together (a lane of all the larger images would leave the
        others idle at the end).
        """
        def shape(index: int):
            return getattr(images[index], "shape", None)

        by_shape: Dict[tuple, List[int]] = {}
        for index in range(len(images)):
            by_shape.setdefault(shape(index), []).append(index)
        in_shape_order = [index for indices in by_shape.values() for index in indices]
        results: Dict[int, object] = {}  # image index -> its result, whichever thread made it

        def work(model, indices: List[int]) -> None:
            for _, shape_run in itertools.groupby(indices, key=shape):
                shape_run = list(shape_run)
                for start in range(0, len(shape_run), batch_size):
                    chunk = shape_run[start:start + batch_size]
                    outputs = model.predict([images[i] for i in chunk], device=self.device, verbose=False, **kwargs)
                    results.update(zip(chunk, outputs))

        def wide() -> None:
            work(self.model, in_shape_order)

        def in_a_lane(lane: int, indices: List[int]) -> None:
            if indices:
                work(self._lane_model(lane), indices)

        lanes = self.threads.lanes if self.export and not self._lanes_failed else 0
        if not lanes:
            self.threads.run(wide)
        else:
            shares = None
            if len(images) >= lanes:  # dealt out in shape order: each lane gets as many of each shape
                shares = [functools.partial(in_a_lane, indices=in_shape_order[k::lanes]) for k in range(lanes)]
            try:
                self.threads.run(wide, functools.partial(in_a_lane, indices=in_shape_order), shares)
            except LaneUnavailable:
                self.threads.run(wide)
        return [results[i] for i in range(len(images))]

    def _lane_model(self, lane: int):
        """This model's engine for `lane`, made on the lane's first call (on the lane's thread):
        another Ultralytics model on the export the wide engine runs, its engine limited to the
        lane's share of the cores. Raises `LaneUnavailable` when it does not load (logged; the
        model then predicts wide only)."""
        if lane not in self._lane_models:
            threads = max(1, usable_cores() // self.threads.lanes)
            try:
                self._lane_models[lane] = load_export(self.export, self.runtime, self.model, self.device,
                                                      lambda start: start(), threads=threads)
            except Exception as exc:
                self._lanes_failed = True
                logger.error("%s: no %s engine for lane %d (%s: %s); the model predicts on every core, one call at "
                             "a time", self.name, ENGINE_NAMES[self.runtime], lane, type(exc).__name__, exc)
                raise LaneUnavailable() from exc
            logger.info("%s: lane %d of %s runs its own %s engine with %d thread(s)", self.name, lane, self.device,
                        ENGINE_NAMES[self.runtime], threads)
        return self._lane_models[lane]

    def run(self, work: Callable):
        """`work(ultralytics_model)` on the device's wide inference thread (never in a lane: work
        that reaches into the model sees the one engine it was loaded with); its result or its
        exception. `work` must not call `run` itself (it would wait for itself)."""
        return self.threads.run(lambda: work(self.model))


class ModelRegistry:
    """Process-wide cache of loaded models, keyed by (path, device, runtime)."""

    def __init__(self):
        self._models: Dict[tuple, LoadedModel] = {}
        self._locks: Dict[tuple, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, path: str, options: InferenceOptions, pytorch: bool = False) -> LoadedModel:
        """The model at `path` on `options.device`, in the runtime chosen for it; `pytorch=True`
        for callers that reach into the PyTorch network itself. The first load of a model decides
        where its exports go and whether it runs in FP16 (one server has one setting of each)."""
        device = options.device
        runtime = "torch" if pytorch or is_sam_weights(path) else choose_runtime(path, device, options.runtime)
        key = (path, device, runtime)
        model = self._models.get(key)
        if model is not None:
            return model
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:  # only requests for this very model wait for its load
            model = self._models.get(key)
            if model is None:
                model = LoadedModel(path, device, runtime, options.exports_dir, options.half, options.cpu_lanes)
                self._models[key] = model
        return model

    def release(self, paths: List[str]) -> None:
        """Forget the models loaded from `paths` (trained versions a publish or a pin replaced),
        so that they are freed once the requests using them finish; loaded again if asked for."""
        unwanted = set(paths)
        with self._guard:
            for key in [key for key in self._models if key[0] in unwanted]:
                logger.info("Releasing %s@%s/%s: no longer serving", key[0], key[1], key[2])
                del self._models[key]

    def loaded(self) -> List[str]:
        return sorted(f"{m.name}@{m.device}/{m.runtime}" for m in list(self._models.values()))


registry = ModelRegistry()


def preload(yolo: YoloSettings, settings: Settings) -> None:
    """Load (and on a CPU export) the weights `PRELOAD_MODELS` names now, one after another, so
    that the first requests do not wait for it; a name that fails is logged and skipped."""
    options = InferenceOptions.from_settings(yolo, settings)
    for name in yolo.preload_models:
        try:
            registry.get(resolve_model_path(name, yolo.model_root), options)
        except Exception as exc:  # a preload must never take the server down
            logger.error("PRELOAD_MODELS: %s not loaded: %s", name, getattr(exc, "detail", exc))


def start_preloading(yolo: YoloSettings, settings: Settings) -> Optional[threading.Thread]:
    """`PRELOAD_MODELS` (weights in MODEL_ROOT) loaded in a background thread of this process;
    None when it names none."""
    if not yolo.preload_models:
        return None
    thread = threading.Thread(target=preload, args=(yolo, settings), name="preload-models", daemon=True)
    thread.start()
    return thread

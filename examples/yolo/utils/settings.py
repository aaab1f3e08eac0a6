"""The YOLO backend's settings, read from the environment once and then passed around, frozen.

Two objects configure a YOLO backend: the SDK's `Settings` (where state lives, Label Studio, the
HTTP layer, jobs; `MODEL_DIR` among them) and `YoloSettings` (weights, inference, training,
caches). `YOLO` receives both and hands them on to its control models, the registry, training and
the smart tools; nothing below reads the environment itself.

`MODEL_DIR` is resolved here and only here (`backend_settings`): when it is unset, the backend's
runtime state (the store, the media cache, exports, the feature cache, debug plots, training runs,
Ultralytics' settings) goes to `examples/yolo/data/server`, git-ignored and mounted by docker
compose, wherever the server is started from.
"""

import functools
import os
from dataclasses import dataclass, replace
from typing import Mapping, Optional, Tuple

from label_studio_ml.settings import Settings, SettingsError, read_fields

YOLO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODEL_DIR = os.path.join(YOLO_DIR, "data", "server")
DEFAULT_MODEL_ROOT = os.path.join(YOLO_DIR, "models")
PREDICTION_SCORES = ("mean", "min", "max")  # how a task's score comes from its regions' (model.py)


@dataclass(frozen=True)
class YoloSettings:
    """Every field is named after its environment variable, lower-cased (README, "Environment
    variables")."""

    # weights
    model_root: str = DEFAULT_MODEL_ROOT       # weights, tracker YAMLs, trained versions, classifiers
    allow_custom_model_path: bool = True       # honour a tag's `model_path`
    model_version: str = "yolo"                # `model_version` of the tags' own weights
    preload_models: Tuple[str, ...] = ()       # weights loaded at start-up
    # inference
    device: str = ""                           # "": CUDA when available, else CPU
    yolo_runtime: str = "auto"                 # auto, torch, onnx, openvino (utils/runtimes.py)
    yolo_half: bool = False                    # FP16 on CUDA
    yolo_batch_size: int = 8                   # images or video frames per model call
    yolo_cpu_lanes: int = 2                    # on a CPU under load, calls predicting side by side
    model_score_threshold: float = 0.5         # a tag's default `model_score_threshold`
    prediction_score: str = "mean"             # a task's score from its regions': mean, min, max
    # media
    max_image_pixels: int = 80_000_000         # larger images fail their task before decoding
    video_progress_frames: int = 500           # log video progress every this many frames
    background_min_frames: int = 1800          # with BACKGROUND_JOBS, longer videos go to RQ workers
    feature_cache_dir: str = ""                # "": MODEL_DIR/feature-cache
    # smart tools: images whose decoded pixels / YOLO-seg instances / SAM embeddings are kept
    interactive_cache_images: int = 4
    yolo_seg_cache_images: int = 16
    sam_cache_images: int = 8
    # debugging
    debug_plot: bool = False                   # every predicted image drawn under MODEL_DIR/debug-plots
    debug_plot_keep: int = 200
    # training (a tag's `model_*` attributes win)
    train_epochs: int = 50
    train_imgsz: int = 0                       # 0: the size the starting weights were trained at
    train_batch: int = 16
    train_patience: int = 20
    train_workers: int = 2
    train_queue: str = "label-studio-ml-train"  # the RQ queue of trainings (GPU workers may take only it)
    train_job_timeout: int = 24 * 3600

    def __post_init__(self):
        object.__setattr__(self, "model_root", os.path.abspath(self.model_root))
        object.__setattr__(self, "device", self.device.strip())
        object.__setattr__(self, "yolo_runtime", self.yolo_runtime.strip().lower())
        object.__setattr__(self, "prediction_score", self.prediction_score.strip().lower())
        if self.prediction_score not in PREDICTION_SCORES:
            raise SettingsError(f"PREDICTION_SCORE must be one of {', '.join(PREDICTION_SCORES)}, "
                             f"not {self.prediction_score!r}")
        object.__setattr__(self, "yolo_batch_size", max(1, self.yolo_batch_size))
        object.__setattr__(self, "video_progress_frames", max(1, self.video_progress_frames))
        object.__setattr__(self, "debug_plot_keep", max(1, self.debug_plot_keep))

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None, **overrides) -> "YoloSettings":
        """Settings from `environ` (default `os.environ`): a variable that is unset or empty keeps
        the field's default; `overrides` (field names) win over both. A value that cannot be used
        is a `SettingsError` naming the variable."""
        return cls(**{**read_fields(cls, os.environ if environ is None else environ, names={}), **overrides})

    def replace(self, **changes) -> "YoloSettings":
        return replace(self, **changes)


@functools.lru_cache(maxsize=1)
def default_yolo_settings() -> YoloSettings:
    """The process's YOLO settings read from the environment, once."""
    return YoloSettings.from_env()


def backend_settings(environ: Optional[Mapping[str, str]] = None, **overrides) -> Settings:
    """The SDK settings of a YOLO backend: as `Settings.from_env`, with `DEFAULT_MODEL_DIR` where
    `MODEL_DIR` is unset or empty."""
    environ = os.environ if environ is None else environ
    defaults = {} if environ.get("MODEL_DIR") else {"model_dir": DEFAULT_MODEL_DIR}
    return Settings.from_env(environ, **{**defaults, **overrides})


@functools.lru_cache(maxsize=1)
def default_backend_settings() -> Settings:
    """The process's SDK settings of the YOLO backend, read once (`YOLO.default_settings`)."""
    return backend_settings()

"""Which engine runs a model's forward pass, and the exported copies that needs.

On a CPU, ONNX Runtime runs the same YOLO network 2-2.5x faster than PyTorch (nano pose model,
2-core EPYC; README "Performance"). So by default (`YOLO_RUNTIME=auto`) PyTorch weights served on a CPU are exported once to ONNX and run by ONNX
Runtime through Ultralytics' own backend: the same pre- and post-processing, outputs equal to
PyTorch's up to float rounding. The export has dynamic batch and image sizes, so rectangular
letterboxing and batching work as with PyTorch. It is cached under `MODEL_DIR/exports`, named by
the weights' path and content and the Ultralytics version, so a changed file or a new Ultralytics
exports anew, and several workers or restarts export once. If the export fails, or its file does
not load in ONNX Runtime, PyTorch serves (logged).

`YOLO_RUNTIME=torch` keeps PyTorch everywhere; `onnx` asks for ONNX Runtime on any device (for
CUDA this needs onnxruntime-gpu). Weights that are not `.pt` files are served as they are.
"""

import glob
import hashlib
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from contextlib import contextmanager
from typing import Optional

from label_studio_ml.exceptions import MLBackendError
from utils.files import exclusive

logger = logging.getLogger(__name__)

# ONNX Runtime otherwise writes a telemetry device id under ~/.cache: a server writes only under
# MODEL_DIR, MODEL_ROOT and its cache directory.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

RUNTIMES = ("auto", "torch", "onnx")


def requested_runtime() -> str:
    value = (os.getenv("YOLO_RUNTIME") or "auto").strip().lower()
    if value not in RUNTIMES:
        raise MLBackendError(f"YOLO_RUNTIME={value!r} is not one of {', '.join(RUNTIMES)}")
    return value


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def choose_runtime(path: str, device: str, requested: Optional[str] = None) -> str:
    """`torch` or `onnx` for PyTorch weights at `path` on `device`; `native` for other formats."""
    if not path.endswith(".pt"):
        return "native"
    requested = requested or requested_runtime()
    if requested == "auto":
        return "onnx" if device == "cpu" and onnxruntime_available() else "torch"
    if requested == "onnx" and not onnxruntime_available():
        raise MLBackendError("YOLO_RUNTIME=onnx, but onnxruntime is not installed (pip install onnxruntime)")
    return requested


def exports_dir() -> str:
    return os.path.join(os.path.abspath(os.getenv("MODEL_DIR", ".")), "exports")


def content_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


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


def onnx_export(weights: str) -> str:
    """Path of the ONNX export of `weights`, exporting it first when the cache has none. One
    process at a time exports a given weights file; the others wait and take its export."""
    import ultralytics

    key = export_key(weights)
    target_dir = exports_dir()
    target = os.path.join(target_dir, f"{key}-{content_digest(weights)}-ultralytics{ultralytics.__version__}.onnx")
    if os.path.isfile(target):
        return target
    os.makedirs(target_dir, exist_ok=True)
    with exclusive(os.path.join(target_dir, key)):
        if not os.path.isfile(target):  # not exported by another worker while this one waited
            _export(weights, key, target)
            remove_stale_exports(key, keep=target)
    return target


def _export(weights: str, key: str, target: str) -> None:
    from ultralytics import YOLO as UltralyticsYOLO

    target_dir = os.path.dirname(target)
    for leftover in glob.glob(os.path.join(target_dir, key + ".tmp-*")):  # of an export that crashed
        shutil.rmtree(leftover, ignore_errors=True)
    logger.info("Exporting %s to ONNX for CPU inference (once; cached as %s)", os.path.basename(weights), target)
    # Ultralytics writes the export next to the weights it loaded: a link in a private directory
    # keeps MODEL_ROOT untouched.
    workdir = tempfile.mkdtemp(prefix=key + ".tmp-", dir=target_dir)
    started = time.monotonic()
    try:
        link = os.path.join(workdir, os.path.basename(weights))
        os.symlink(os.path.abspath(weights), link)
        with quiet_ultralytics():
            exported = UltralyticsYOLO(link).export(format="onnx", dynamic=True, simplify=True, device="cpu")
        os.replace(exported, target)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    logger.info("Exported %s to ONNX in %.1f s", os.path.basename(weights), time.monotonic() - started)


def remove_stale_exports(key: str, keep: str) -> None:
    """Exports of earlier contents of the same weights file (retrained, replaced), or made by an
    earlier Ultralytics: nothing loads them any more. Processes that still serve one keep working
    (ONNX Runtime read the file when it loaded it)."""
    stale = re.compile(re.escape(key) + r"-[0-9a-f]{16}-ultralytics[^/]*\.onnx")
    for name in os.listdir(os.path.dirname(keep)):
        path = os.path.join(os.path.dirname(keep), name)
        if stale.fullmatch(name) and path != keep:
            logger.info("Removing stale ONNX export %s", name)
            discard(path)


def discard(path: str) -> None:
    try:
        os.remove(path)
    except OSError as exc:
        logger.warning("Cannot remove ONNX export %s: %s", path, exc)

"""`DEBUG_PLOT=true`: every predicted image, drawn by Ultralytics with what the model found, saved
as a JPEG under `MODEL_DIR/debug-plots` (the upstream backend opened a matplotlib window, which a
server cannot show). Only the newest `DEBUG_PLOT_KEEP` (200) files are kept.

The drawing is the model's raw view (all its classes, above the control's threshold); comparing
it with what Label Studio shows separates model problems from label-mapping problems.
"""

import itertools
import logging
import os
import re
import threading
import time

import cv2

from label_studio_ml.utils import env_bool, env_int

logger = logging.getLogger(__name__)

_counter = itertools.count()
_prune_lock = threading.Lock()


def enabled() -> bool:
    return env_bool("DEBUG_PLOT", False)


def plots_dir() -> str:
    return os.path.join(os.path.abspath(os.getenv("MODEL_DIR", ".")), "debug-plots")


def save_debug_plot(result, control_name: str) -> str:
    """Write `result.plot()` to a new file; returns its path."""
    directory = plots_dir()
    os.makedirs(directory, exist_ok=True)
    safe_name = re.sub(r"[^A-Za-z0-9_.-]", "_", control_name)[:60]
    path = os.path.join(directory, f"{time.strftime('%Y%m%d-%H%M%S')}-{next(_counter):06d}-{safe_name}.jpg")
    cv2.imwrite(path, result.plot())
    logger.info("Debug plot of <%s>: %s", control_name, path)
    _prune(directory, max(1, env_int("DEBUG_PLOT_KEEP", 200)))
    return path


def _prune(directory: str, keep: int) -> None:
    with _prune_lock:
        files = sorted((entry for entry in os.scandir(directory) if entry.name.endswith(".jpg")),
                       key=lambda entry: (entry.stat().st_mtime_ns, entry.name))
        for entry in files[:-keep]:
            try:
                os.remove(entry.path)
            except OSError:
                pass

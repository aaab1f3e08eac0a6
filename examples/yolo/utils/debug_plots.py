"""`DEBUG_PLOT=true`: every predicted image, drawn by Ultralytics with what the model found, saved
as a JPEG under `MODEL_DIR/debug-plots` (the upstream backend opened a matplotlib window, which a
server cannot show). Only the newest `DEBUG_PLOT_KEEP` (200) files are kept.

The drawing is the model's raw view (all its classes, above the control's threshold); comparing
it with what Label Studio shows separates model problems from label-mapping problems.
"""

import itertools
import logging
import os
import threading
import time
from typing import Optional

import cv2

from utils.files import safe_name

logger = logging.getLogger(__name__)

_counter = itertools.count()
_prune_lock = threading.Lock()


def plots_dir(model_dir: str) -> str:
    return os.path.join(model_dir, "debug-plots")


def save_debug_plot(result, control_name: str, directory: str, keep: int) -> Optional[str]:
    """Write `result.plot()` to a new file in `directory`, keeping its newest `keep` plots; its
    path, or None when that failed (logged: a debug aid never fails a prediction)."""
    name = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{next(_counter):06d}-{safe_name(control_name, 60)}.jpg"
    path = os.path.join(directory, name)
    try:
        os.makedirs(directory, exist_ok=True)
        if not cv2.imwrite(path, result.plot()):
            raise OSError("cv2.imwrite wrote nothing")
        _prune(directory, keep)
    except Exception as exc:
        logger.warning("Debug plot of <%s> not saved to %s: %s: %s", control_name, path, type(exc).__name__, exc)
        return None
    logger.info("Debug plot of <%s>: %s", control_name, path)
    return path


def _prune(directory: str, keep: int) -> None:
    """Remove all but the newest `keep` plots (another worker may be removing some meanwhile)."""
    with _prune_lock:
        plots = []
        for entry in os.scandir(directory):
            if entry.name.endswith(".jpg"):
                try:
                    plots.append((entry.stat().st_mtime_ns, entry.name, entry.path))
                except FileNotFoundError:
                    pass
        for _, _, path in sorted(plots)[:-keep]:
            try:
                os.remove(path)
            except FileNotFoundError:
                pass

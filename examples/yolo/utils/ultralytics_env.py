"""What Ultralytics and the libraries it loads read from the environment when first imported.

These libraries take their configuration from environment variables at import time and offer no
other way, so this is the one place the backend writes to `os.environ`. `prepare_ultralytics`
must run before the first `import ultralytics` of the process: `YOLO` calls it for every
instance (the server, cli.py, RQ jobs all build one before predicting or training), `_wsgi.py`
before preloading weights, the test suite before collecting tests. It uses `setdefault`, so what
an operator set stays, and the first call of a process decides (the libraries read it once).
"""

import os
import sys

from label_studio_ml.settings import Settings


def prepare_ultralytics(settings: Settings) -> None:
    """Keep the libraries' files under `settings.model_dir` and off the network:

    - `YOLO_CONFIG_DIR`: Ultralytics' settings file, with the backend's state.
    - `YOLO_AUTOINSTALL=false`: a server must never pip-install packages at run time (Ultralytics
      would, e.g. for HEIF images).
    - `MPLCONFIGDIR`: a training imports matplotlib (Ultralytics' font check), which writes its
      font cache under ~/.cache/matplotlib otherwise.
    - `ORT_DISABLE_TELEMETRY`: ONNX Runtime writes a telemetry device id under ~/.cache otherwise.
    - OpenVINO's telemetry (`block_openvino_telemetry`).

    Processes this one starts inherit the variables; a spawned Python process must block OpenVINO's
    telemetry itself.
    """
    os.environ.setdefault("YOLO_CONFIG_DIR", os.path.join(settings.model_dir, "ultralytics"))
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    os.environ.setdefault("MPLCONFIGDIR", os.path.join(settings.model_dir, "matplotlib"))
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    block_openvino_telemetry()


def block_openvino_telemetry() -> None:
    """`import openvino` imports its converter, which sends usage events to Google Analytics and
    writes a client id under ~/intel unless `openvino_telemetry` cannot be imported (None in
    `sys.modules`, as here), in which case it uses a silent stub."""
    sys.modules.setdefault("openvino_telemetry", None)

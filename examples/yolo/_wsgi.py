"""Entry point of the YOLO backend: `gunicorn _wsgi:app` (what start.sh runs) or
`python _wsgi.py -p 9090` (gunicorn too; Flask's development server with `--debug`)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from label_studio_ml.api import init_app  # noqa: E402
from label_studio_ml.wsgi import app_for_gunicorn, configure_logging, run_model_server  # noqa: E402
from model import YOLO  # noqa: E402
from utils.inference import start_preloading  # noqa: E402
from utils.settings import default_yolo_settings  # noqa: E402
from utils.ultralytics_env import prepare_ultralytics  # noqa: E402


def serving_app():
    """The app gunicorn serves (start.sh), its preloading started."""
    app = init_app(model_class=YOLO)
    preload(app.extensions["ml_server"].settings)
    return app


def preload(settings) -> None:
    """`PRELOAD_MODELS` loaded in the background of this serving process (whose SDK settings are
    `settings`), Ultralytics prepared first."""
    prepare_ultralytics(settings)
    start_preloading(default_yolo_settings(), settings)


if __name__ == "__main__":
    run_model_server(YOLO, on_start=preload)
else:
    configure_logging()
    app = app_for_gunicorn(serving_app)

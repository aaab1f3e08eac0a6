"""Fixtures of the YOLO suite: a MODEL_ROOT with the test weights, the backend's settings, a YOLO
backend built or served in this process with them.

In-process backends get their configuration as settings (`backend_settings`, `yolo_settings`),
never through the environment; tests that start a child process configure it by environment."""

import os
from contextlib import contextmanager

import pytest

from helpers import serve_in_thread
from label_studio_ml.settings import Settings
from utils.settings import YoloSettings, backend_settings as environment_backend_settings
from utils.ultralytics_env import prepare_ultralytics
from yolo_helpers import TEST_MODELS_DIR, fetch_pose_model

# Before any test module imports Ultralytics: its settings file and matplotlib's cache where the
# backend keeps them (the test modules import Ultralytics when collected).
prepare_ultralytics(environment_backend_settings())


@pytest.fixture(scope="session")
def model_root(tmp_path_factory):
    """MODEL_ROOT holding the synthetic test models and the real COCO pose model."""
    root = tmp_path_factory.mktemp("model_root")
    names = [n for n in os.listdir(TEST_MODELS_DIR) if n.endswith(".pt")]
    if len(names) < 5:
        pytest.fail(f"test models missing in {TEST_MODELS_DIR}: run examples/yolo/tests/make_test_models.py")
    for name in names:
        os.symlink(os.path.join(TEST_MODELS_DIR, name), root / name)
    os.symlink(fetch_pose_model(), root / "yolo11n-pose.pt")
    return str(root)


@pytest.fixture
def backend_settings(tmp_path) -> Settings:
    """The SDK settings of a test's backend: its own MODEL_DIR (so its own store), no Label Studio."""
    return Settings(model_dir=str(tmp_path / "model_dir"), label_studio_check=False)


@pytest.fixture
def yolo_settings(model_root) -> YoloSettings:
    """The YOLO settings of a test's backend: the test weights, every other setting its default."""
    return YoloSettings(model_root=model_root)


@pytest.fixture
def new_backend(backend_settings, yolo_settings):
    """`new_backend(project_id, label_config)`: a YOLO instance as the server builds one per
    request, with the test's settings (`yolo=` other YOLO settings)."""
    from model import YOLO

    def new(project_id="1", label_config=None, yolo=None):
        return YOLO(project_id=project_id, label_config=label_config, settings=backend_settings,
                    yolo_settings=yolo or yolo_settings)
    return new


@pytest.fixture
def serve_yolo(backend_settings, yolo_settings):
    """`with serve_yolo(settings=, yolo=) as base_url`: the YOLO backend served over real HTTP on a
    loopback port, with the test's settings unless others are given."""
    import model
    from label_studio_ml.api import init_app

    @contextmanager
    def serve(settings=None, yolo=None):
        yolo = yolo or yolo_settings
        app = init_app(model.YOLO, settings=settings or backend_settings, model_kwargs={"yolo_settings": yolo})
        with serve_in_thread(app) as base:
            yield base
    return serve


@pytest.fixture
def yolo_server(serve_yolo):
    """The YOLO backend served with the test's settings."""
    with serve_yolo() as base:
        yield base


@pytest.fixture
def images_dir(tmp_path):
    path = tmp_path / "images"
    path.mkdir()
    return path

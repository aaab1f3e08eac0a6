"""Fixtures of the YOLO suite: a MODEL_ROOT with the test weights, a served YOLO backend."""

import os

import pytest

from helpers import serve_in_thread
from yolo_helpers import TEST_MODELS_DIR, fetch_pose_model


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
def yolo_env(model_root, tmp_path, monkeypatch):
    monkeypatch.setenv("MODEL_ROOT", model_root)
    monkeypatch.setenv("MODEL_DIR", str(tmp_path / "model_dir"))
    monkeypatch.setenv("LABEL_STUDIO_CHECK", "false")
    monkeypatch.delenv("MODEL_SCORE_THRESHOLD", raising=False)
    monkeypatch.delenv("ALLOW_CUSTOM_MODEL_PATH", raising=False)
    return tmp_path


@pytest.fixture
def yolo_server(yolo_env):
    """The YOLO backend served over real HTTP on a loopback port."""
    from label_studio_ml.api import init_app
    from model import YOLO

    with serve_in_thread(init_app(YOLO)) as base:
        yield base


@pytest.fixture
def images_dir(tmp_path):
    path = tmp_path / "images"
    path.mkdir()
    return path

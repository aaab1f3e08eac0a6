"""Fixtures of the SDK suite: an isolated MODEL_DIR and the settings of a backend using it."""

import pytest

from label_studio_ml.settings import Settings


@pytest.fixture
def model_dir(tmp_path, monkeypatch):
    """A fresh MODEL_DIR (so a fresh SQLite store) for each test; child servers inherit no Label
    Studio or basic auth settings from the environment the suite runs in."""
    path = tmp_path / "model_dir"
    path.mkdir()
    for name in ("LABEL_STUDIO_URL", "LABEL_STUDIO_HOST", "LABEL_STUDIO_API_KEY", "LABEL_STUDIO_ACCESS_TOKEN",
                 "BASIC_AUTH_USER", "BASIC_AUTH_PASS", "ML_SERVER_BASIC_AUTH_USER", "ML_SERVER_BASIC_AUTH_PASS"):
        monkeypatch.delenv(name, raising=False)
    return path


@pytest.fixture
def settings(model_dir) -> Settings:
    """A backend's settings: its own MODEL_DIR, no Label Studio, no start-up check, no basic auth."""
    return Settings(model_dir=str(model_dir), label_studio_check=False)

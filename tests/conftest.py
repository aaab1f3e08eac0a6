"""Fixtures of the SDK suite: an isolated MODEL_DIR."""

import pytest


@pytest.fixture
def model_dir(tmp_path, monkeypatch):
    """A fresh MODEL_DIR (so a fresh SQLite store) for each test."""
    path = tmp_path / "model_dir"
    path.mkdir()
    monkeypatch.setenv("MODEL_DIR", str(path))
    monkeypatch.setenv("CACHE_TYPE", "sqlite")
    monkeypatch.setenv("LABEL_STUDIO_CHECK", "false")
    for name in ("LABEL_STUDIO_URL", "LABEL_STUDIO_HOST", "LABEL_STUDIO_API_KEY", "BASIC_AUTH_USER", "BASIC_AUTH_PASS"):
        monkeypatch.delenv(name, raising=False)
    return path

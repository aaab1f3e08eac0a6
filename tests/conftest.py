"""Fixtures of the SDK suite: an isolated MODEL_DIR, a real redis-server."""

import shutil
import subprocess
import time

import pytest

from helpers import free_port


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


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A real redis-server on a free loopback port for the whole session."""
    binary = shutil.which("redis-server")
    if not binary:
        pytest.skip("redis-server is not installed (apt-get install redis-server); .ci/run installs it")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


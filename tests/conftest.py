"""Shared fixtures: free loopback ports, real HTTP servers, a real redis-server."""

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import pytest
import requests
from werkzeug.serving import make_server

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WIRE_SAMPLES = os.path.join(os.path.dirname(REPO_ROOT), "shared", "ls_wire_samples")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, timeout: float = 30.0, auth=None) -> requests.Response:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            return requests.get(url, timeout=2, auth=auth)
        except requests.ConnectionError as exc:
            last = exc
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout} s: {last}")


@contextmanager
def serve_in_thread(app):
    """Serve a WSGI app over real HTTP on a loopback port; yields its base URL."""
    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)


@contextmanager
def serve_in_process(args, env=None, cwd=None, health_path="/health", auth=None, timeout=60.0):
    """Run a server command in a child process; yields (base_url, process). `{port}` in args is filled."""
    port = free_port()
    args = [a.replace("{port}", str(port)) for a in args]
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in [REPO_ROOT, full_env.get("PYTHONPATH", "")] if p)
    full_env.update(env or {})
    proc = subprocess.Popen(args, env=full_env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_for_http(base + health_path, timeout=timeout, auth=auth)
        except TimeoutError:
            proc.kill()
            output = proc.communicate(timeout=5)[0]
            raise RuntimeError(f"server {args} did not start:\n{output[-4000:]}")
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


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


PYTHON = sys.executable

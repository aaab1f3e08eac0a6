"""Test helpers shared by the SDK and YOLO suites: loopback ports, real HTTP servers."""

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

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


PYTHON = sys.executable

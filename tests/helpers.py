"""Test helpers shared by the SDK and YOLO suites: loopback ports, real HTTP servers."""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager

import requests
from werkzeug.serving import make_server

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Requests a real Label Studio 1.23.2 sent to a backend (see the README in that folder).
WIRE_SAMPLES = os.path.join(REPO_ROOT, "tests", "data", "ls_wire_samples")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def wait_until(condition, timeout: float, interval: float = 0.2, what: str = "condition"):
    """Poll `condition()` until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached within {timeout:.0f} s")
        time.sleep(interval)


def start_logged(args, env, log_path, cwd=None) -> subprocess.Popen:
    """A child in its own process group (gunicorn, Label Studio and RQ fork), output to `log_path`."""
    log = open(log_path, "w", encoding="utf-8")
    try:
        return subprocess.Popen(args, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        log.close()


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the child's process group, then SIGKILL what is left after 20 s."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def read_log(log_path: str, tail: int = 6000) -> str:
    with open(log_path, encoding="utf-8", errors="replace") as f:
        return f.read()[-tail:] if tail else f.read()


def wait_until_up(url: str, process: subprocess.Popen, log_path: str, timeout: float, auth=None) -> float:
    """Seconds until `url` answers 200; RuntimeError with the server's log if it exits or never does."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with status {process.returncode}:\n{read_log(log_path)}")
        try:
            if requests.get(url, timeout=5, auth=auth).status_code == 200:
                return time.monotonic() - started
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s:\n{read_log(log_path)}")


@contextmanager
def serve_in_process(args, env=None, cwd=None, health_path="/health", auth=None, timeout=60.0, log_path=None):
    """Run a server command in a child process; yields (base_url, process).

    `{port}` in args and env values is replaced by a free port. Output goes to `log_path` (a temp
    file by default, never a pipe nobody reads) and is shown if the server does not come up.
    """
    port = free_port()
    args = [a.replace("{port}", str(port)) for a in args]
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in [REPO_ROOT, full_env.get("PYTHONPATH", "")] if p)
    full_env.update({k: v.replace("{port}", str(port)) for k, v in (env or {}).items()})
    with tempfile.TemporaryDirectory() as scratch:
        log_path = log_path or os.path.join(scratch, "server.log")
        process = start_logged(args, full_env, log_path, cwd=cwd)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_up(base + health_path, process, log_path, timeout, auth=auth)
            yield base, process
        finally:
            stop(process)


PYTHON = sys.executable

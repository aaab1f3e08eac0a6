"""Test helpers shared by the SDK and YOLO suites: loopback ports, real HTTP servers."""

import os
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
            return requests.get(url, timeout=5, auth=auth)
        except (requests.ConnectionError, requests.Timeout) as exc:  # not listening yet, or workers booting
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
    log = open(log_path, "ab") if log_path else tempfile.TemporaryFile()
    proc = subprocess.Popen(args, env=full_env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_for_http(base + health_path, timeout=timeout, auth=auth)
        except TimeoutError:
            proc.kill()
            proc.wait(5)
            log.seek(0)
            output = log.read().decode(errors="replace")
            raise RuntimeError(f"server {args} did not start:\n{output[-4000:]}")
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        log.close()


PYTHON = sys.executable

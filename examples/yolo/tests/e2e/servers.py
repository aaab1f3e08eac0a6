"""Starting and stopping the servers of the e2e suite: Label Studio and YOLO backends."""

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import requests

from helpers import REPO_ROOT, free_port

YOLO_DIR = os.path.join(REPO_ROOT, "examples", "yolo")


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log_path: str

    def log(self, tail: int = 6000) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()[-tail:] if tail else f.read()


@dataclass
class LabelStudioServer(Server):
    token: str

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Token {self.token}"}

    def client(self):
        from label_studio_sdk import LabelStudio

        return LabelStudio(base_url=self.url, api_key=self.token)


def start_logged(args, env, log_path, cwd=None) -> subprocess.Popen:
    """A child in its own process group (Label Studio and gunicorn fork), output to `log_path`."""
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


def wait_until_up(server: Server, path: str, timeout: float, auth=None) -> float:
    """Seconds until `path` answers 200; fails with the server's log if it dies or never does."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if server.process.poll() is not None:
            pytest.fail(f"{server.url} exited with status {server.process.returncode}:\n{server.log()}")
        try:
            if requests.get(server.url + path, timeout=5, auth=auth).status_code == 200:
                return time.monotonic() - started
        except requests.RequestException:
            pass
        time.sleep(0.5)
    pytest.fail(f"{server.url}{path} did not answer within {timeout:.0f} s:\n{server.log()}")


@contextmanager
def yolo_backend_process(label_studio, model_root: str, model_dir, **settings):
    """The YOLO backend as the README starts it (`examples/yolo/start.sh`: gunicorn), pointed at
    Label Studio with its URL and token; `settings` are extra environment variables.
    Yields `(server, env)`; env is what a worker of this backend needs too."""
    port = free_port()
    env = dict(os.environ)
    for key in ("BASIC_AUTH_USER", "BASIC_AUTH_PASS", "MODEL_SCORE_THRESHOLD", "MODEL_VERSION", "LABEL_STUDIO_HOST",
                "JOBS_QUEUE", "JOB_RETRIES"):
        env.pop(key, None)
    env.update({
        # the gunicorn of this interpreter
        "PATH": os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""),
        "PYTHONPATH": os.pathsep.join(p for p in [REPO_ROOT, env.get("PYTHONPATH", "")] if p),
        "MODEL_ROOT": model_root,
        "MODEL_DIR": str(model_dir),
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": label_studio.token,
        "PORT": str(port),
        "LOG_LEVEL": "INFO",
        # the SDK's media helpers make folders in the user's data and cache dirs
        "XDG_DATA_HOME": str(model_dir / "xdg-data"),
        "XDG_CACHE_HOME": str(model_dir / "xdg-cache"),
    })
    env.update({key: str(value) for key, value in settings.items()})
    log_path = str(model_dir / "backend.log")
    process = start_logged(["bash", os.path.join(YOLO_DIR, "start.sh")], env, log_path)
    server = Server(url=f"http://127.0.0.1:{port}", process=process, log_path=log_path)
    try:
        auth = (settings["BASIC_AUTH_USER"], settings["BASIC_AUTH_PASS"]) if "BASIC_AUTH_USER" in settings else None
        wait_until_up(server, "/health", 60, auth=auth)
        yield server, env
    finally:
        stop(process)

"""Starting and stopping the servers of the e2e suite: Label Studio and YOLO backends."""

import os
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass

from helpers import REPO_ROOT, free_port, read_log, start_logged, stop, wait_until_up

YOLO_DIR = os.path.join(REPO_ROOT, "examples", "yolo")


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log_path: str

    def log(self, tail: int = 6000) -> str:
        return read_log(self.log_path, tail)

    def wait_until_up(self, timeout: float, auth=None) -> float:
        return wait_until_up(self.url + "/health", self.process, self.log_path, timeout, auth=auth)


@dataclass
class LabelStudioServer(Server):
    token: str

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Token {self.token}"}

    def client(self):
        from label_studio_sdk import LabelStudio

        return LabelStudio(base_url=self.url, api_key=self.token)


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
        server.wait_until_up(60, auth=(settings["BASIC_AUTH_USER"], settings["BASIC_AUTH_PASS"])
                             if "BASIC_AUTH_USER" in settings else None)
        yield server, env
    finally:
        stop(process)

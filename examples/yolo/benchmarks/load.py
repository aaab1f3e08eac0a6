"""Shared by the benchmark, soak and concurrency scripts: a served backend and request mixes."""

import os
import sys
from contextlib import contextmanager

import requests

YOLO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO_ROOT = os.path.dirname(os.path.dirname(YOLO_DIR))
sys.path.insert(0, os.path.join(REPO_ROOT, "tests"))

from helpers import serve_in_process  # noqa: E402


@contextmanager
def served_backend(env: dict, workers: int = 1, threads: int = 4, log_path: str = os.devnull):
    """The YOLO backend started as the README says (start.sh -> gunicorn); yields (base URL, process)."""
    settings = {"PORT": "{port}", "WORKERS": str(workers), "THREADS": str(threads), "LABEL_STUDIO_CHECK": "false",
                "LOG_LEVEL": os.getenv("LOG_LEVEL", "WARNING")}
    settings.update(env)
    with serve_in_process(["bash", os.path.join(YOLO_DIR, "start.sh")], env=settings, log_path=log_path) as served:
        yield served


def process_tree_rss(pid: int) -> int:
    """Resident memory (bytes) of a process and all its children (gunicorn master + workers)."""
    import psutil

    root = psutil.Process(pid)
    total = 0
    for proc in [root] + root.children(recursive=True):
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def predict(base: str, tasks: list, label_config: str, timeout: float = 120, session=None) -> requests.Response:
    """POST /predict; with a `requests.Session` the connection is kept between calls, without one
    each call connects anew."""
    return (session or requests).post(base + "/predict", json={"tasks": tasks, "label_config": label_config,
                                                                "project": "1"}, timeout=timeout)


"""Shared by the benchmark, soak and concurrency scripts: a served backend and request mixes."""

import json
import os
import socket
import sys
from contextlib import contextmanager
from urllib.parse import urlsplit

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
    return (session or requests).post(base + "/predict", data=predict_body(tasks, label_config),
                                      headers={"Content-Type": "application/json"}, timeout=timeout)



def predict_body(tasks: list, label_config: str) -> bytes:
    """The JSON body of a `/predict` request of `tasks` for project 1."""
    return json.dumps({"tasks": tasks, "label_config": label_config, "project": "1"}).encode()


class LeanClient:
    """HTTP/1.1 POSTs of ready-made JSON bodies on one kept-alive connection, for measuring the
    server: it does little more than write the request and read the answer, so on a small machine
    the client's own CPU time (several ms per request with `requests`, which builds, checks and
    parses much more) weighs little on the figures. The server's answer must carry a
    Content-Length (Flask's JSON answers do)."""

    def __init__(self, base: str, timeout: float = 120):
        url = urlsplit(base)
        self._address = (url.hostname, url.port)
        self._timeout = timeout
        self._socket = None
        self._reader = None

    def __enter__(self) -> "LeanClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._socket is not None:
            self._reader.close()
            self._socket.close()
        self._socket = self._reader = None

    def post(self, path: str, body: bytes) -> tuple:
        """(status code, body) of a POST of the JSON `body` to `path`."""
        if self._socket is None:
            self._socket = socket.create_connection(self._address, timeout=self._timeout)
            self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._reader = self._socket.makefile("rb")
        head = (f"POST {path} HTTP/1.1\r\nHost: {self._address[0]}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        self._socket.sendall(head + body)
        status = int(self._reader.readline().split()[1])
        headers = {}
        for line in iter(self._reader.readline, b"\r\n"):
            if not line:
                raise ConnectionError("the server closed the connection mid-answer")
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        answer = self._reader.read(int(headers["content-length"]))
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, answer

"""Replays issue #16's hostile cases against the YOLO backend served by start.sh and prints how
`/health` answers meanwhile, and the worker's peak resident memory. Not a test: figures to read.

    python examples/yolo/benchmarks/hostile.py [--tasks 2000]

Cases, one after another, each bounded and stopping by itself (loopback addresses only):
- slow clients: 8 connections send headers and part of a /predict body, then stall;
- trickle: a task whose image URL sends one byte every 2 s;
- chunked: a task whose image URL streams 64 MB chunked, without Content-Length;
- many tasks: one /predict of --tasks tiny tasks (Label Studio sends a whole selection at once).
"""

import argparse
import logging
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import requests
from PIL import Image

from load import process_tree_rss, served_backend

logger = logging.getLogger("hostile")

CONFIG = ('<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image" '
          'model_path="{}"><Label value="person"/><Label value="car"/><Label value="circle"/>'
          '<Label value="square"/></RectangleLabels></View>')  # COCO weights or the test suite's shapes-det.pt
CASE_SECONDS = 20


class _HostileMedia(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        try:
            if self.path.startswith("/trickle"):
                self.send_header("Content-Length", "100000")
                self.end_headers()
                for _ in range(CASE_SECONDS // 2):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(2)
            else:
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                chunk = b"0" * (1 << 20)
                for _ in range(64):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass  # the backend gave up on it, as it should

    def log_message(self, *args):
        pass


@contextmanager
def hostile_media_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HostileMedia)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


class Watch:
    """Polls /health and the backend's RSS in a thread while a case runs."""

    def __init__(self, base: str, pid: int):
        self.base, self.pid = base, pid
        self.latencies, self.failures, self.peak_rss = [], 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                ok = requests.get(self.base + "/health", timeout=2).status_code == 200
            except requests.RequestException:
                ok = False
            if ok:
                self.latencies.append(time.monotonic() - started)
            else:
                self.failures += 1
            self.peak_rss = max(self.peak_rss, process_tree_rss(self.pid))
            self._stop.wait(0.25)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)

    def line(self, case: str, elapsed: float) -> str:
        if self.latencies:
            p95 = sorted(self.latencies)[int(0.95 * (len(self.latencies) - 1))]
            health = f"/health median {statistics.median(self.latencies) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms"
        else:
            health = "/health never answered"
        return (f"{case:<12} {elapsed:6.1f} s  {health}, {self.failures} failed or >2 s; "
                f"peak RSS {self.peak_rss / 2 ** 20:.0f} MB")


def slow_clients(base: str) -> None:
    host, port = base.rsplit("/", 1)[-1].split(":")
    sockets = []
    for _ in range(8):
        sock = socket.create_connection((host, int(port)))
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100000\r\n\r\n{\"tasks\": [")
        sockets.append(sock)
    time.sleep(CASE_SECONDS)
    for sock in sockets:
        sock.close()


def predict(base: str, tasks: list, model: str) -> str:
    started = time.monotonic()
    try:
        response = requests.post(base + "/predict", json={"tasks": tasks, "project": "1",
                                                          "label_config": CONFIG.format(model)}, timeout=600)
        errors = sum(1 for r in response.json().get("results", []) if isinstance(r, dict) and r.get("error"))
        return f"HTTP {response.status_code}, {errors} task errors, {time.monotonic() - started:.1f} s"
    except requests.RequestException as exc:
        return f"{type(exc).__name__} after {time.monotonic() - started:.1f} s"


def tiny_image(folder: str) -> str:
    path = os.path.join(folder, "tiny.png")
    Image.fromarray(np.full((64, 64, 3), 127, np.uint8)).save(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=2000, help="tasks of the many-task request")
    parser.add_argument("--model", default=os.getenv("BENCH_MODEL", "yolov8n.pt"), help="model_path to predict with")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    env = {"MEDIA_READ_TIMEOUT": "10", "MEDIA_TOTAL_TIMEOUT": "10", "MEDIA_MAX_BYTES": str(16 << 20),
           "REQUEST_BODY_TIMEOUT": "10"}
    with tempfile.TemporaryDirectory() as folder, hostile_media_server() as media, \
            served_backend(env, threads=8) as (base, process):
        image = tiny_image(folder)
        cases = [
            ("slow bodies", lambda: slow_clients(base)),
            ("trickle", lambda: logger.info("  %s", predict(base, [{"id": 1, "data": {"image": media + "/trickle.png"}}], args.model))),
            ("chunked", lambda: logger.info("  %s", predict(base, [{"id": 2, "data": {"image": media + "/chunked.png"}}], args.model))),
            ("many tasks", lambda: logger.info("  %s", predict(base, [{"id": i, "data": {"image": image}}
                                                                     for i in range(args.tasks)], args.model))),
        ]
        for name, run in cases:
            started = time.monotonic()
            with Watch(base, process.pid) as watch:
                run()
            logger.info(watch.line(name, time.monotonic() - started))


if __name__ == "__main__":
    sys.exit(main())

"""Broken and hostile input to the YOLO backend: each gets a clear 4xx JSON or a per-task error,
and the server keeps serving."""

import struct
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

import synthetic
from yolo_helpers import save_image

CONFIG = ('<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image" '
          'model_path="shapes-det.pt"><Label value="circle"/><Label value="square"/></RectangleLabels></View>')


def png_header_only(width, height) -> bytes:
    """A PNG that declares width x height pixels but carries almost no data (a decompression bomb)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


class _MediaHandler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/slow"):
            time.sleep(3)
        if self.path.startswith("/html"):
            body = b"<html><body>login page</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
        else:
            body = b'{"detail": "not found"}'
            self.send_response(404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except BrokenPipeError:
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def media_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _MediaHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def good_task(images_dir):
    image, _ = synthetic.detection_scene(synthetic.HELDOUT_SEED_START)
    return {"id": 1, "data": {"image": save_image(image, str(images_dir / "good.png"))}}


def post_predict(base, tasks, config=CONFIG):
    return requests.post(base + "/predict", json={"tasks": tasks, "label_config": config, "project": "1"}, timeout=60)


def bad_task_cases(images_dir, media_server):
    bomb = images_dir / "bomb.png"
    bomb.write_bytes(png_header_only(30000, 30000))
    empty = images_dir / "empty.jpg"
    empty.write_bytes(b"")
    text = images_dir / "notes.png"
    text.write_text("just some text, not an image")
    return [
        ({"id": 10, "data": {"image": str(bomb)}}, "MAX_IMAGE_PIXELS"),
        ({"id": 11, "data": {"image": str(empty)}}, "empty.jpg"),
        ({"id": 12, "data": {"image": str(text)}}, "notes.png"),
        ({"id": 13, "data": {"image": str(images_dir / "absent.png")}}, "absent.png"),
        ({"id": 14, "data": {"image": media_server + "/missing.png"}}, "missing.png"),
        ({"id": 15, "data": {"image": media_server + "/slow.png"}}, "slow.png"),
        ({"id": 16, "data": {"image": media_server + "/html.png"}}, "html.png"),
        ({"id": 17, "data": {"picture": "/tmp/x.png"}}, "no 'image'"),
        ({"id": 18, "data": {"image": 42}}, "must be a URL or path string"),
        ({"id": 19, "data": {"image": ["/tmp/a.png"]}}, "must be a URL or path string"),
        ({"id": 20, "data": {"image": "/data/upload/1/x.png"}}, "LABEL_STUDIO_URL"),
        ({"id": 21, "data": {"image": "s3://bucket/key.png"}}, "s3://bucket/key.png"),
        ({"id": 22}, "no 'data'"),
    ]


@pytest.fixture
def backend_settings(backend_settings):
    """Media downloads give up after 1 s without data (the slow media server's image)."""
    return backend_settings.replace(media_read_timeout=1)


def test_each_broken_task_fails_alone_with_a_clear_error(yolo_server, images_dir, media_server, good_task):
    cases = bad_task_cases(images_dir, media_server)
    tasks = [good_task] + [task for task, _ in cases] + [good_task]
    results = post_predict(yolo_server, tasks).json()["results"]
    assert len(results) == len(tasks)
    assert results[0]["result"] and results[-1]["result"] and results[0] == results[-1]
    for (task, needle), result in zip(cases, results[1:-1]):
        assert result["result"] == [] and result["score"] == 0 and result["model_version"] == "yolo", task
        assert needle in result["error"], (task, result["error"])


@pytest.mark.parametrize("index", range(13))
def test_a_broken_task_alone_is_answered_and_the_server_stays_up(yolo_server, images_dir, media_server, good_task,
                                                                 index):
    task, needle = bad_task_cases(images_dir, media_server)[index]
    response = post_predict(yolo_server, [task])
    # one rule whatever the batch size: a task's problem is reported in its own entry
    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]
    assert result["result"] == [] and result["score"] == 0 and needle in result["error"]
    assert post_predict(yolo_server, [good_task]).json()["results"][0]["result"]


def test_a_task_whose_media_is_not_a_string_fails_alone(yolo_server, good_task):
    """It once answered 400 for the whole batch: a task's data is the task's problem."""
    response = post_predict(yolo_server, [good_task, {"id": 2, "data": {"image": 123}}])
    assert response.status_code == 200, response.text
    good, bad = response.json()["results"]
    assert good["result"] and "error" not in good
    assert bad["result"] == [] and "must be a URL or path string, not int" in bad["error"]


BAD_CONFIGS = [
    ("<View><Image name=", "does not parse"),
    ('<View><Image name="image" value="$image"/></View>', "supported"),
    (CONFIG.replace('model_path="shapes-det.pt"', 'model_path="../../etc/passwd"'), "not a path"),
    (CONFIG.replace('model_path="shapes-det.pt"', 'model_path="/etc/passwd"'), "not a path"),
    (CONFIG.replace('model_path="shapes-det.pt"', 'model_path="missing.pt"'), "available"),
    (CONFIG.replace('model_path="shapes-det.pt"', 'model_path="shapes-det.pt" model_score_threshold="high"'), "not a number"),
    (CONFIG.replace('RectangleLabels name="label"', 'RectangleLabels model_skip="maybe" name="label"'), "model_skip"),
    (CONFIG.replace("<RectangleLabels", '<Choices choice="bogus"').replace("</RectangleLabels>", "</Choices>")
     .replace('model_path="shapes-det.pt"', 'model_path="shapes-cls.pt"').replace("<Label ", "<Choice "), "choice="),
    (CONFIG.replace('model_path="shapes-det.pt"', 'model_path="shapes-cls.pt"'), "classify model"),
]


@pytest.mark.parametrize("config,needle", BAD_CONFIGS, ids=[n for _, n in BAD_CONFIGS])
def test_bad_labeling_configs_are_400_with_the_reason(yolo_server, good_task, config, needle):
    response = post_predict(yolo_server, [good_task], config=config)
    assert response.status_code == 400, response.text
    assert needle in response.json()["detail"]
    assert post_predict(yolo_server, [good_task]).status_code == 200

"""Hostile callers, round two (issue #16): where a request's values become URLs, tokens, cache keys
or held threads, each hole below was reproduced first and is closed at the SDK's edge."""

import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from flask import Flask, Response, jsonify, request

from fake_label_studio import LEGACY_TOKEN, PNG_BYTES, make_fake_label_studio
from helpers import PYTHON, serve_in_process, serve_in_thread, wait_until
from label_studio_ml import media
from label_studio_ml.admission import InferenceGate
from label_studio_ml.api import init_app
from label_studio_ml.exceptions import FailedDependency, NotFound, PayloadTooLarge, TaskDataError
from sdk_models import EchoModel

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def recording_label_studio():
    """A Label Studio stand-in that serves every path and records (path, Authorization header);
    a presigned cloud file's bytes name the task it was presigned for."""
    app = Flask("recording-label-studio")
    seen = []
    app.config["seen"] = seen

    @app.route("/", defaults={"path": ""})
    @app.route("/<path:path>")
    def anything(path):
        seen.append(("/" + path, request.headers.get("Authorization")))
        if path.startswith("tasks/") and path.endswith("/presign/"):
            return Response(f"task {path.split('/')[1]}".encode(), mimetype="image/png")
        if path.startswith("api/"):
            return jsonify({"id": 1, "title": "secret project"})
        return Response(PNG_BYTES, mimetype="image/png")

    return app


@pytest.fixture
def evil_host(settings):
    """A recording Label Studio stand-in: its URL, what it saw, and settings naming it with a token."""
    app = recording_label_studio()
    with serve_in_thread(app) as base:
        yield base, app.config["seen"], settings.replace(label_studio_url=base, label_studio_api_key=LEGACY_TOKEN)


def tokens_sent(seen):
    return [auth for _, auth in seen if auth]


# ----- 1. a token goes only to the host it came with ------------------------------------------------

def test_a_hostname_sent_alone_to_setup_does_not_inherit_the_stored_token(settings, evil_host):
    evil, seen, _ = evil_host
    settings = settings.replace(label_studio_api_key="env-key-0123456789")  # without LABEL_STUDIO_URL: for no /setup host
    with serve_in_thread(make_fake_label_studio()) as label_studio, \
            serve_in_thread(init_app(EchoModel, settings=settings)) as backend:
        first = {"project": "3.1", "schema": "<View/>", "hostname": label_studio, "access_token": LEGACY_TOKEN}
        assert requests.post(backend + "/setup", json=first).status_code == 200
        assert EchoModel(project_id="3", settings=settings).get_local_path("/data/upload/3/a.png")  # the pair works
        assert requests.post(backend + "/setup", json={"project": "3.1", "hostname": evil}).status_code == 200
        EchoModel(project_id="3", settings=settings).get_local_path("/data/upload/3/b.png")
    assert seen and tokens_sent(seen) == []


def test_label_studio_url_is_not_overridden_by_setup(settings, evil_host):
    evil, seen, _ = evil_host
    with serve_in_thread(make_fake_label_studio()) as label_studio:
        settings = settings.replace(label_studio_url=label_studio, label_studio_api_key=LEGACY_TOKEN)
        with serve_in_thread(init_app(EchoModel, settings=settings)) as backend:
            requests.post(backend + "/setup", json={"project": "3.1", "hostname": evil, "access_token": "x"})
            with open(EchoModel(project_id="3", settings=settings).get_local_path("/data/upload/3/c.png"), "rb") as f:
                assert f.read() == PNG_BYTES
    assert seen == []


def test_setup_refuses_a_hostname_that_is_no_url(settings):
    with serve_in_thread(init_app(EchoModel, settings=settings)) as backend:
        response = requests.post(backend + "/setup", json={"project": "3", "hostname": "file:///etc", "access_token": "t"})
    assert response.status_code == 400 and "hostname" in response.json()["detail"]


# ----- 2. task ids, cloud cache, token only to media endpoints --------------------------------------

@pytest.mark.parametrize("task_id", ["../../api/projects/1?x=", "../../data/upload/1/a.png?x=", "1/../2", 1.5, True])
def test_a_task_id_that_is_no_integer_never_reaches_a_url(evil_host, task_id):
    _, seen, settings = evil_host
    with pytest.raises(TaskDataError, match="not an integer"):
        media.get_local_path(settings, "s3://bucket/a.png", task_id=task_id)
    assert seen == []


def test_cloud_files_are_cached_per_task_never_across_projects(evil_host):
    _, seen, settings = evil_host
    for task_id in (7, "8", 7):
        with open(media.get_local_path(settings, "s3://bucket/same.png", task_id=task_id), "rb") as f:
            assert f.read() == f"task {task_id}".encode()
    assert [path for path, _ in seen] == ["/tasks/7/presign/", "/tasks/8/presign/"]  # the third is a cache hit


@pytest.mark.parametrize("url", ["{ls}/api/projects/1", "{ls}/data/upload/../../api/projects/1?x=",
                                 "{ls}/data/upload/%2e%2e/%2e%2e/api/projects/1", "{ls}/tasks/1/presign/../../api/x"])
def test_the_token_goes_only_to_media_endpoints(evil_host, url):
    evil, seen, settings = evil_host
    try:
        media.get_local_path(settings, url.format(ls=evil))
    except (FailedDependency, NotFound):
        pass
    assert seen and tokens_sent(seen) == []
    media.get_local_path(settings, "/data/upload/1/ok.png")
    assert tokens_sent(seen) == ["Token " + LEGACY_TOKEN]


# ----- 4. downloads: total deadline, streamed size -------------------------------------------------

class _HostileMedia(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        if self.path.startswith(("/trickle", "/until-close")):
            if self.path.startswith("/trickle"):
                self.send_header("Content-Length", "1000")
            else:  # no length, not chunked: the body ends when the connection closes
                self.send_header("Connection", "close")
            self.end_headers()
            for _ in range(40):  # one byte every 0.5 s: each wait is short, the sum is not
                if not self._send(b"x"):
                    return
                time.sleep(0.5)
        else:  # chunked, no Content-Length: 4 MB in 64 KB chunks
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunk = b"0" * 65536
            for _ in range(64):
                if not self._send(b"%x\r\n%s\r\n" % (len(chunk), chunk)):
                    return
            self._send(b"0\r\n\r\n")

    def _send(self, data) -> bool:
        try:
            self.wfile.write(data)
            self.wfile.flush()
            return True
        except OSError:
            return False

    def log_message(self, *args):
        pass


@pytest.fixture
def hostile_media(model_dir):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HostileMedia)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_a_trickling_download_stops_at_the_total_deadline(hostile_media, settings):
    settings = settings.replace(media_read_timeout=5, media_total_timeout=2)
    started = time.monotonic()
    with pytest.raises(FailedDependency, match="MEDIA_TOTAL_TIMEOUT"):
        media.get_local_path(settings, hostile_media + "/trickle.png")
    assert time.monotonic() - started < 10  # the trickle alone lasts 20 s


def test_a_body_cut_off_at_the_deadline_is_never_cached_as_complete(hostile_media, settings):
    """Without Content-Length, the deadline closing the connection looks like the body's end."""
    settings = settings.replace(media_read_timeout=5, media_total_timeout=1.5)
    for _ in range(2):  # the second try finds no truncated file in the cache either
        with pytest.raises(FailedDependency, match="MEDIA_TOTAL_TIMEOUT"):
            media.get_local_path(settings, hostile_media + "/until-close.png")


def test_a_chunked_download_is_counted_while_it_streams(hostile_media, settings):
    settings = settings.replace(media_max_bytes=100000)
    with pytest.raises(PayloadTooLarge, match="MEDIA_MAX_BYTES=100000"):
        media.get_local_path(settings, hostile_media + "/chunked.png")
    cached = [name for _, _, names in os.walk(media.media_cache_dir(settings)) for name in names]
    assert cached == []


# ----- 6. JSON nested too deep -----------------------------------------------------------------------

@pytest.mark.parametrize("method, path", [("POST", "/setup"), ("POST", "/predict"), ("POST", "/webhook"),
                                          ("POST", "/train"), ("GET", "/versions")])
@pytest.mark.parametrize("depth", [100_000, 150])
def test_deeply_nested_json_is_a_400_on_every_endpoint(settings, method, path, depth):
    body = '{"project": ' + "[" * depth + "]" * depth + "}"
    with serve_in_thread(init_app(EchoModel, settings=settings)) as backend:
        response = requests.request(method, backend + path, data=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 400, response.text
        assert "MAX_JSON_DEPTH" in response.json()["detail"]
        assert requests.get(backend + "/health").status_code == 200


# ----- 7. unauthenticated webhooks name no paths ------------------------------------------------------

class PathLeakingModel(EchoModel):
    def fit(self, event, data, **kwargs):
        raise NotFound("File not found: /srv/secret/videos/" + str((data.get("task") or {}).get("data")))


def test_an_unauthenticated_webhook_answer_names_no_path(settings):
    label_studio = make_fake_label_studio()
    state = label_studio.config["state"]
    state["annotations"][8] = {"id": 8, "task": 10, "project": 5, "result": []}
    state["tasks"][10] = {"id": 10, "project": 5, "data": {"text": "clip.mp4"}}
    state["projects"][5] = {"id": 5, "label_config": "<View/>"}
    with serve_in_thread(label_studio) as ls_url:
        settings = settings.replace(label_studio_url=ls_url, label_studio_api_key=LEGACY_TOKEN,
                                    basic_auth_user="u", basic_auth_pass="p")
        with serve_in_thread(init_app(PathLeakingModel, settings=settings)) as backend:
            webhook = {"action": "ANNOTATION_CREATED", "annotation": {"id": 8}, "project": {"id": 5}}
            anonymous = requests.post(backend + "/webhook", json=webhook)
            authenticated = requests.post(backend + "/webhook", json=webhook, auth=("u", "p"))
    assert anonymous.status_code == 422 and "/srv" not in anonymous.text and "clip" not in anonymous.text
    assert authenticated.status_code == 404 and "/srv/secret/videos" in authenticated.json()["detail"]


# ----- 3. slow clients ------------------------------------------------------------------------------------

def slow_client(base: str, path: str = "/predict") -> socket.socket:
    """A connection that sends its headers and 10 of the 1000 body bytes it announces, then stalls."""
    host, port = base.rsplit("/", 1)[-1].split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 "Content-Length: 1000\r\n\r\n{\"tasks\": ".encode())
    return sock


def test_a_stalled_request_body_is_answered_408(settings):
    with serve_in_thread(init_app(EchoModel, settings=settings.replace(request_body_timeout=1))) as backend:
        sock = slow_client(backend)
        sock.settimeout(15)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        sock.close()
        # the server goes on answering, a body that arrives in time included
        assert requests.post(backend + "/setup", json={"project": "1", "schema": "<View/>"}, timeout=5).status_code == 200
    answer = answer.decode()
    assert answer.startswith("HTTP/1.1 408") and "REQUEST_BODY_TIMEOUT" in answer


def test_slow_clients_leave_health_answering_and_gunicorn_errors_are_json(model_dir):
    """Under gunicorn admitting 1 running + 3 waiting requests, 6 clients stalled in their /predict bodies."""
    command = [PYTHON, "-m", "gunicorn", "-c", "python:label_studio_ml.gunicorn_config", "-b", "127.0.0.1:{port}",
               "sdk_models:app"]
    env = {"MODEL_DIR": str(model_dir), "LABEL_STUDIO_CHECK": "false", "PREDICT_CONCURRENCY": "1",
           "PREDICT_QUEUE_SIZE": "3", "REQUEST_BODY_TIMEOUT": "60"}
    with serve_in_process(command, env=env, cwd=TESTS_DIR) as (base, _):
        stalled = [slow_client(base) for _ in range(6)]
        try:
            time.sleep(1)  # let gunicorn hand them to its threads
            for _ in range(3):
                assert requests.get(base + "/health", timeout=5).status_code == 200
            response = requests.post(base + "/predict", json={"tasks": [{"data": {"text": "x"}}]}, timeout=5)
            assert response.status_code == 503 and response.headers["Retry-After"]
        finally:
            for sock in stalled:
                sock.close()
        too_long = requests.get(base + "/health?" + "x" * 5000, timeout=5)
        assert too_long.status_code == 414 and too_long.headers["Content-Type"] == "application/json"
        assert too_long.json()["status"] == 414
        many_headers = requests.get(base + "/health", headers={f"X-{i}": "y" for i in range(150)}, timeout=5)
        assert many_headers.status_code == 431 and many_headers.json()["status"] == 431


def test_each_gunicorn_worker_sizes_its_gate_by_the_threads_it_serves_with(model_dir):
    """gunicorn_config.py asks for 70 threads; `--threads 5` on the command line wins, and the app
    learns it: 5 threads less RESERVED_THREADS (2) leave 3 requests to admit, all running."""
    command = [PYTHON, "-m", "gunicorn", "-c", "python:label_studio_ml.gunicorn_config", "--threads", "5",
               "-b", "127.0.0.1:{port}", "sdk_models:app"]
    with serve_in_process(command, env={"MODEL_DIR": str(model_dir), "LABEL_STUDIO_CHECK": "false"}, cwd=TESTS_DIR) \
            as (base, _):
        metrics = requests.get(base + "/metrics", timeout=5).json()
    assert (metrics["predictions_max_running"], metrics["predictions_max_queued"]) == (3, 0)


# ----- 5. fairness ------------------------------------------------------------------------------------

def test_a_long_request_lets_a_waiting_one_run_between_its_chunks():
    gate = InferenceGate(max_running=1, max_waiting=4, wait_timeout=30)
    order = []

    def long_request():
        with gate.slot():
            order.append("long chunk 1")
            deadline = time.monotonic() + 10
            while gate.waiting == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            gate.take_turn()
            order.append("long chunk 2")

    def short_request():
        while gate.running == 0:
            time.sleep(0.01)
        with gate.slot():
            order.append("short")

    threads = [threading.Thread(target=long_request), threading.Thread(target=short_request)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    assert order == ["long chunk 1", "short", "long chunk 2"]
    assert gate.figures()["predictions_running"] == 0 and gate.admitted == 0


class CountingModel(EchoModel):
    def predict(self, tasks, context=None, **kwargs):
        time.sleep(0.05 * len(tasks))
        return super().predict(tasks, context=context, **kwargs)


def test_a_huge_request_does_not_starve_a_small_one(settings):
    finished = []

    def post(name, count):
        tasks = [{"id": i, "data": {"text": str(i)}} for i in range(count)]
        response = requests.post(backend + "/predict", json={"tasks": tasks, "label_config": "<View/>"}, timeout=60)
        assert len(response.json()["results"]) == count
        finished.append(name)

    with serve_in_thread(init_app(CountingModel, settings=settings.replace(predict_concurrency=1,
                                                                           predict_chunk_size=4))) as backend:
        huge = threading.Thread(target=post, args=("huge", 80))
        huge.start()
        while requests.get(backend + "/metrics").json()["predictions_running"] == 0:
            time.sleep(0.01)
        post("small", 2)
        huge.join(60)
    assert finished == ["small", "huge"]


def test_webhooks_answer_while_every_prediction_slot_is_taken(settings):
    """Anonymous webhooks take no prediction slot, and unknown events answer 200 under any load."""
    settings = settings.replace(predict_concurrency=1, predict_queue_size=0)
    with serve_in_thread(init_app(EchoModel, basic_auth_user="u", basic_auth_pass="p", settings=settings)) as base:
        body = {"tasks": [{"id": 1, "data": {"text": "sleep"}}], "label_config": "<View/>", "project": "1"}
        busy = threading.Thread(target=requests.post, args=(base + "/predict",), kwargs={"json": body, "auth": ("u", "p")})
        busy.start()
        try:
            quick = dict(body, tasks=[{"id": 2, "data": {"text": "quick"}}])
            time.sleep(0.5)  # a probe must not take the slot before the busy request does (no queue: it would 503)
            wait_until(lambda: requests.post(base + "/predict", json=quick, auth=("u", "p")).status_code == 503, 5,
                       interval=0.02, what="the only prediction slot taken")
            event = requests.post(base + "/webhook", json={"action": "TASKS_CREATED", "project": {"id": 1}})
            assert event.status_code == 200 and event.json() == {"status": "Unknown event"}
        finally:
            busy.join(10)
        huge = requests.post(base + "/webhook", data=b"{" + b" " * (11 * 1024 * 1024) + b"}",
                             headers={"Content-Type": "application/json"})
        assert huge.status_code == 413 and "WEBHOOK_MAX_MB_UNAUTHENTICATED" in huge.json()["detail"]
        assert requests.get(base + "/health", auth=("u", "p")).status_code == 200

"""The HTTP contract of SPEC §1, through real HTTP on a loopback port."""

import base64
import contextlib
import json
import os
import threading

import pytest
import requests

from fake_label_studio import LEGACY_TOKEN, make_fake_label_studio
from helpers import WIRE_SAMPLES, serve_in_thread
from label_studio_ml.api import init_app
from sdk_models import EchoModel, NoScoreModel, ShortModel

CONFIG = '<View><Text name="text" value="$text"/><Choices name="label" toName="text"><Choice value="a"/></Choices></View>'


@pytest.fixture
def server(settings):
    with serve_in_thread(init_app(EchoModel, settings=settings)) as base:
        yield base


def predict(base, tasks, **extra):
    body = {"tasks": tasks, "project": "42.1700000000", "label_config": CONFIG, "params": {"login": None, "password": None}}
    body.update(extra)
    return requests.post(base + "/predict", json=body, timeout=30)


def test_health_and_index(server):
    for path in ("/", "/health"):
        response = requests.get(server + path)
        assert response.status_code == 200
        assert response.json() == {"status": "UP", "model_class": "EchoModel"}


def test_setup_returns_model_version_and_stores_extra_params(server):
    response = requests.post(server + "/setup", json={
        "project": "42.1700000000", "schema": CONFIG, "hostname": "http://ls:8080",
        "access_token": "secret", "extra_params": {"threshold": 0.3},
    })
    assert response.status_code == 200
    assert response.json() == {"model_version": "echo-1"}
    # project "42" and "42.1700000000" are the same project: extra_params set above are visible
    prediction = predict(server, [{"id": 1, "data": {"text": "x"}}], project="42").json()["results"][0]
    assert prediction["extra_params"] == {"threshold": 0.3}
    assert prediction["project"] == "42"


def test_setup_without_extra_params_clears_the_stored_ones(server):
    """Clearing Connect Model's "Extra params" field: Label Studio's next /setup carries none."""
    requests.post(server + "/setup", json={"project": "43.1", "schema": CONFIG, "extra_params": {"threshold": 0.3}})
    assert requests.post(server + "/setup", json={"project": "43.1", "schema": CONFIG}).status_code == 200
    prediction = predict(server, [{"id": 1, "data": {"text": "x"}}], project="43").json()["results"][0]
    assert prediction["extra_params"] == {}


def test_predict_one_prediction_per_task_with_version_and_score(server):
    tasks = [{"id": i, "data": {"text": f"t{i}"}} for i in range(5)]
    results = predict(server, tasks).json()["results"]
    assert [r["result"][0]["value"]["choices"] for r in results] == [[f"t{i}"] for i in range(5)]
    assert all(r["model_version"] == "echo-1" for r in results)
    assert all(r["score"] == pytest.approx(0.8) for r in results)


def test_predict_fills_missing_version_and_numeric_score(settings):
    with serve_in_thread(init_app(NoScoreModel, settings=settings)) as base:
        result = predict(base, [{"data": {"text": "x"}}]).json()["results"][0]
    assert result["model_version"] == "0.0.1"
    assert result["score"] == pytest.approx(0.3)


@pytest.mark.parametrize("chunk_size", [32, 2])
def test_too_few_predictions_are_never_stored_on_the_wrong_task(settings, chunk_size):
    """A batch answering the wrong number of predictions is predicted task by task: each task gets
    its own prediction (never its neighbour's), a task the model answers nothing for an error."""
    texts = ["a", "b", "nothing", "d", "e"]
    with serve_in_thread(init_app(ShortModel, settings=settings.replace(predict_chunk_size=chunk_size))) as base:
        results = predict(base, [{"id": i, "data": {"text": t}} for i, t in enumerate(texts)]).json()["results"]
    assert len(results) == len(texts)
    for text, result in zip(texts, results):
        if text == "nothing":
            assert result["result"] == [] and "no prediction" in result["error"]
        else:
            assert result["result"][0]["value"]["choices"] == [text] and "error" not in result


def test_context_and_params_reach_predict(server):
    context = {"result": [{"type": "keypointlabels", "value": {"x": 1, "y": 2}}]}
    body = {"tasks": [{"id": 1, "data": {"text": "x"}}], "project": "1", "label_config": CONFIG,
            "params": {"login": "u", "password": None, "context": context}}
    result = requests.post(server + "/predict", json=body).json()["results"][0]
    assert result["context"] == context
    assert result["params"] == {"login": "u", "password": None}
    body["params"]["context"] = None  # interactive calls may carry an empty context
    assert requests.post(server + "/predict", json=body).json()["results"][0]["context"] is None


def test_one_failing_task_does_not_sink_the_batch(server):
    tasks = [{"id": 1, "data": {"text": "a"}}, {"id": 2, "data": {"text": "boom"}},
             {"id": 3, "data": {"text": "missing"}}, {"id": 4, "data": {"text": "d"}}, {"id": 5}]
    response = predict(server, tasks)
    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == 5
    assert results[0]["result"][0]["value"]["choices"] == ["a"]
    assert results[3]["result"][0]["value"]["choices"] == ["d"]
    for index, needle in ((1, "model exploded"), (2, "/nowhere/missing.jpg"), (4, "no 'data'")):
        assert results[index]["result"] == [] and results[index]["score"] == 0
        assert results[index]["model_version"] == "echo-1"
        assert needle in results[index]["error"]


@pytest.mark.parametrize("task, needle", [
    ({"id": 3, "data": {"text": "missing"}}, "/nowhere/missing.jpg"),  # media error (404 inside the model)
    ({"id": 2, "data": {"text": "boom"}}, "RuntimeError: model exploded"),  # the model raised
    ({"id": 5}, "no 'data'"),  # no data
    ("not a task", "not a JSON object"),
])
def test_a_task_problem_is_reported_in_its_entry_whatever_the_batch_size(server, task, needle):
    """One rule for 1..N tasks: the problem task gets its error entry, the request answers 200."""
    good = {"id": 1, "data": {"text": "a"}}
    for tasks in ([task], [task, good], [good, task, good]):
        response = predict(server, tasks)
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert len(results) == len(tasks)
        for sent, result in zip(tasks, results):
            if sent is good:
                assert result["result"][0]["value"]["choices"] == ["a"] and "error" not in result
            else:
                assert result["result"] == [] and result["score"] == 0 and result["model_version"] == "echo-1"
                assert needle in result["error"]


def test_unexpected_task_failure_is_logged_with_its_traceback(server, caplog):
    with caplog.at_level("ERROR", logger="label_studio_ml"):
        predict(server, [{"id": 2, "data": {"text": "boom"}}])
    (record,) = [r for r in caplog.records if "model exploded" in r.getMessage()]
    assert record.exc_info and "predict" in "".join(__import__("traceback").format_tb(record.exc_info[2]))


def test_predict_without_any_labeling_config_asks_for_setup(server):
    response = requests.post(server + "/predict", json={"tasks": [{"id": 1, "data": {"text": "a"}}], "project": "777"})
    assert response.status_code == 400
    assert "/setup" in response.json()["detail"] and "label_config" in response.json()["detail"]
    # once /setup stored the project's config, the same request predicts
    assert requests.post(server + "/setup", json={"project": "777", "schema": CONFIG}).status_code == 200
    response = requests.post(server + "/predict", json={"tasks": [{"id": 1, "data": {"text": "a"}}], "project": "777"})
    assert response.json()["results"][0]["result"][0]["value"]["choices"] == ["a"]


@pytest.mark.parametrize("name", ["tasks", "self"])
def test_params_naming_predict_arguments_are_a_400(server, name):
    response = predict(server, [{"id": 1, "data": {"text": "a"}}], params={name: 1})
    assert response.status_code == 400 and repr(name) in response.json()["detail"]
    assert requests.get(server + "/health").status_code == 200


def test_webhook_annotation_created_calls_fit(server, settings):
    body = {"action": "ANNOTATION_CREATED", "project": {"id": 7, "label_config": CONFIG},
            "annotation": {"id": 1, "result": []}, "task": {"id": 1, "data": {"text": "x"}}}
    response = requests.post(server + "/webhook", json=body)
    assert response.status_code == 201
    assert response.json() == {"status": "ok", "result": {"event": "ANNOTATION_CREATED", "fit_count": 1,
                                                          "keys": ["annotation", "project", "task"]}}
    assert EchoModel(project_id="7", settings=settings).get("fit_count") == "1"


def test_unknown_webhook_event_does_not_call_fit(server, settings):
    for action in ("TASKS_CREATED", "PROJECT_UPDATED", "SOMETHING_NEW"):
        response = requests.post(server + "/webhook", json={"action": action, "project": {"id": 8}})
        assert response.status_code == 200
        assert response.json() == {"status": "Unknown event"}
    assert EchoModel(project_id="8", settings=settings).get("fit_count") is None


def test_train_accepts_webhook_form_and_older_annotations_form(server):
    response = requests.post(server + "/train", json={"action": "START_TRAINING", "project": {"id": 9, "label_config": CONFIG}})
    assert response.status_code == 201 and response.json()["result"]["event"] == "START_TRAINING"
    older = {"annotations": [{"id": 1, "data": {"text": "x"}, "annotations": []}], "project": "9.1700000000",
             "label_config": CONFIG, "params": {}}
    response = requests.post(server + "/train", json=older)
    assert response.status_code == 201
    assert response.json()["result"] == {"event": "START_TRAINING", "fit_count": 2,
                                         "keys": ["annotations", "label_config", "params", "project"]}


def test_versions_and_metrics(server):
    requests.post(server + "/setup", json={"project": "5", "schema": CONFIG})
    assert requests.get(server + "/versions", params={"project": "5"}).json() == {"versions": ["echo-1"]}
    predict(server, [{"data": {"text": "x"}}])
    requests.post(server + "/predict", data="not json")
    metrics = requests.get(server + "/metrics").json()
    assert metrics["endpoints"]["/predict"]["requests"] == 2
    assert metrics["endpoints"]["/predict"]["errors_4xx"] == 1
    assert metrics["endpoints"]["/predict"]["latency_seconds"]["p99"] > 0
    assert metrics["uptime_seconds"] > 0 and metrics["predictions_running"] == 0
    text = requests.get(server + "/metrics", params={"format": "prometheus"}).text
    assert 'label_studio_ml_requests_total{endpoint="/predict"} 2' in text
    assert 'label_studio_ml_errors_total{endpoint="/predict",status="4xx"} 1' in text


MALFORMED = [
    ("POST", "/predict", "not json at all", "JSON object"),
    ("POST", "/predict", "[1, 2, 3]", "JSON object"),
    ("POST", "/predict", json.dumps({"project": "1"}), "'tasks'"),
    ("POST", "/predict", json.dumps({"tasks": "nope"}), "'tasks'"),
    ("POST", "/predict", json.dumps({"tasks": [1, 2]}), "call /setup first"),  # unknown project, no config
    ("POST", "/predict", json.dumps({"tasks": [{"id": 1}], "project": "404"}), "call /setup first"),
    ("POST", "/predict", json.dumps({"tasks": [{"data": {"text": "x"}}], "label_config": 5}), "label_config"),
    ("POST", "/predict", json.dumps({"tasks": [{"data": {"text": "x"}}], "params": [1]}), "params"),
    ("POST", "/setup", "{", "JSON object"),
    ("POST", "/setup", json.dumps({"schema": CONFIG}), "'project'"),
    ("POST", "/setup", json.dumps({"project": "1", "schema": 12}), "schema"),
    ("POST", "/webhook", json.dumps({"project": {"id": 1}}), "action"),
    ("POST", "/webhook", json.dumps({"action": "ANNOTATION_CREATED"}), "project"),
    ("POST", "/webhook", "null", "JSON object"),
    ("POST", "/train", json.dumps({"annotations": []}), "project"),
    ("GET", "/predict", None, "not allowed"),
    ("GET", "/no-such-endpoint", None, "not found"),
]


@pytest.mark.parametrize("method,path,body,needle", MALFORMED, ids=[f"{m} {p} {b!r:.30}" for m, p, b, _ in MALFORMED])
def test_malformed_requests_get_4xx_json_and_server_stays_up(server, method, path, body, needle):
    response = requests.request(method, server + path, data=body, headers={"Content-Type": "application/json"})
    assert 400 <= response.status_code < 500
    payload = response.json()
    assert payload["status"] == response.status_code
    assert needle.lower() in payload["detail"].lower()
    assert requests.get(server + "/health").status_code == 200


def test_oversized_body_is_413_json(settings):
    with serve_in_thread(init_app(EchoModel, settings=settings.replace(max_request_mb=1))) as base:
        response = requests.post(base + "/predict", data="x" * (2 * 1024 * 1024), headers={"Content-Type": "application/json"})
        assert response.status_code == 413 and response.json()["status"] == 413
        assert requests.get(base + "/health").status_code == 200


class Broken(EchoModel):
    def setup(self):
        raise ZeroDivisionError("bad setup")


def test_unexpected_error_is_500_json_without_traceback(settings):
    with serve_in_thread(init_app(Broken, settings=settings)) as base:
        response = requests.post(base + "/setup", json={"project": "1", "schema": CONFIG})
        assert response.status_code == 500
        assert response.json()["detail"] == "Internal error: ZeroDivisionError: bad setup"
        assert "traceback" not in response.json()
        assert requests.get(base + "/health").status_code == 200


def test_debug_settings_add_the_traceback_to_a_500(settings):
    with serve_in_thread(init_app(Broken, settings=settings.replace(debug=True))) as base:
        response = requests.post(base + "/setup", json={"project": "1", "schema": CONFIG})
    assert response.status_code == 500 and "ZeroDivisionError" in response.json()["traceback"]


def _wire_sample(name):
    with open(os.path.join(WIRE_SAMPLES, name + ".json")) as f:
        return json.load(f)


WIRE = ["GET_health", "GET_versions", "POST_setup", "POST_predict", "POST_predict_interactive",
        "POST_webhook_ANNOTATION_CREATED", "POST_webhook_ANNOTATION_UPDATED",
        "POST_webhook_ANNOTATIONS_DELETED", "POST_webhook_START_TRAINING"]


@contextlib.contextmanager
def _label_studio_confirming(webhook, settings):
    """A fake Label Studio holding the webhook's annotation, task and project (none for a deletion);
    yields `settings` naming it."""
    app = make_fake_label_studio()
    state, project = app.config["state"], webhook["project"]
    state["projects"][project["id"]] = project
    if "annotation" in webhook:
        task = webhook["task"]
        state["annotations"][webhook["annotation"]["id"]] = dict(webhook["annotation"], task=task["id"], project=project["id"])
        state["tasks"][task["id"]] = task
    with serve_in_thread(app) as ls_url:
        yield settings.replace(label_studio_url=ls_url, label_studio_api_key=LEGACY_TOKEN)


@pytest.mark.parametrize("name", WIRE)
def test_every_captured_label_studio_request_is_accepted_with_basic_auth(settings, name):
    """The captures were made with Basic auth mluser:mlpass; annotation webhooks carry no header."""
    sample = _wire_sample(name)
    headers = {k: v for k, v in sample["headers"].items() if k in ("Authorization", "Content-Type")}
    with contextlib.ExitStack() as stack:
        if "Authorization" not in headers:  # the backend confirms such webhooks with Label Studio
            settings = stack.enter_context(_label_studio_confirming(sample["body"], settings))
        base = stack.enter_context(serve_in_thread(init_app(EchoModel, basic_auth_user="mluser", basic_auth_pass="mlpass",
                                                            settings=settings)))
        response = requests.request(sample["method"], base + sample["path"], headers=headers,
                                    data=json.dumps(sample["body"]) if sample["body"] is not None else None)
    assert response.status_code in (200, 201), response.text
    body = response.json()
    if name.startswith("POST_predict"):
        assert len(body["results"]) == len(sample["body"]["tasks"])
        assert all(r["model_version"] == "echo-1" for r in body["results"])
    if name.startswith("POST_webhook"):
        assert body["status"] == "ok"
        assert EchoModel(project_id="5", settings=settings).get("last_event") == sample["body"]["action"]


ENDPOINTS = [("GET", "/"), ("GET", "/health"), ("POST", "/setup"), ("POST", "/predict"), ("POST", "/train"),
             ("GET", "/versions"), ("GET", "/metrics"), ("POST", "/webhook")]


def test_basic_auth_guards_every_endpoint(settings):
    bodies = {"/setup": {"project": "1", "schema": CONFIG}, "/predict": {"tasks": [{"data": {"text": "x"}}], "project": "1"},
              "/train": {"project": {"id": 1}}, "/webhook": {"action": "START_TRAINING", "project": {"id": 1}}}
    good = "Basic " + base64.b64encode(b"user:pa ss").decode()
    bad = "Basic " + base64.b64encode(b"user:wrong").decode()
    with serve_in_thread(init_app(EchoModel, basic_auth_user="user", basic_auth_pass="pa ss", settings=settings)) as base:
        for method, path in ENDPOINTS:
            for header in (None, bad):
                response = requests.request(method, base + path, json=bodies.get(path),
                                            headers={"Authorization": header} if header else {})
                assert response.status_code == 401, (path, header)
                assert response.json()["status"] == 401
                assert response.headers["WWW-Authenticate"] == 'Basic realm="Login required"'
            response = requests.request(method, base + path, json=bodies.get(path), headers={"Authorization": good})
            assert response.status_code in (200, 201), (path, response.text)


def test_unauthenticated_annotation_webhook_without_label_studio_settings_is_refused(settings):
    """With Label Studio settings it trains on what Label Studio confirms (test_webhook_confirmation.py)."""
    with serve_in_thread(init_app(EchoModel, settings=settings.replace(basic_auth_user="u", basic_auth_pass="p"))) as base:
        response = requests.post(base + "/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": 3},
                                                          "annotation": {"id": 1}})
        assert response.status_code == 403 and "LABEL_STUDIO_API_KEY" in response.json()["detail"]
        assert EchoModel(project_id="3", settings=settings).get("fit_count") is None
        # unknown project events without credentials: a quick 200, nothing run
        assert requests.post(base + "/webhook", json={"action": "TASKS_CREATED", "project": {"id": 3}}).status_code == 200
        # nothing else opens: no training, no predictions without credentials
        assert requests.post(base + "/webhook", json={"action": "START_TRAINING", "project": {"id": 3}}).status_code == 401
        assert requests.post(base + "/predict", json={"tasks": [{"data": {"text": "x"}}]}).status_code == 401


def test_overload_answers_503_with_retry_after(settings):
    with serve_in_thread(init_app(EchoModel, settings=settings.replace(predict_concurrency=1, predict_queue_size=0))) as base:
        slow = threading.Thread(target=predict, args=(base, [{"data": {"text": "sleep"}}]))
        slow.start()
        try:
            for _ in range(50):
                if requests.get(base + "/metrics").json()["predictions_running"] == 1:
                    break
                threading.Event().wait(0.02)
            response = predict(base, [{"data": {"text": "x"}}])
            assert response.status_code == 503
            assert response.headers["Retry-After"].isdigit()
            assert requests.get(base + "/metrics").json()["predictions_rejected_total"] == 1
        finally:
            slow.join()
        assert predict(base, [{"data": {"text": "x"}}]).status_code == 200

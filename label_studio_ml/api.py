"""The HTTP layer: a Flask app that Label Studio (and curl users) talk to.

It knows nothing of any model library: it validates requests, builds the per-request model
instance, shapes answers the way Label Studio stores them, and turns every failure into JSON
`{"status": <code>, "detail": "<message>"}`.
"""

import hmac
import json
import logging
import threading
import time
import traceback
from typing import Any, Dict, List, Optional, Type

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from . import jobs
from .admission import gate_from_settings
from .exceptions import BadRequest, MLBackendError, NotFound, Overloaded, PayloadTooLarge, Unauthorized
from .isolation import TaskFailed, run_isolated
from .label_studio_api import confirmed_annotation_event
from .media import check_label_studio_connection, valid_label_studio_url
from .metrics import RequestMetrics, to_prometheus
from .model import LabelStudioMLBase
from .request_body import parse_json_object, read_body, refuse_body
from .parsing import project_id_from
from .response import normalize_predictions, task_error
from .settings import Settings

logger = logging.getLogger(__name__)

# Label Studio sends these webhooks without the Basic auth header even when the user configured it.
UNAUTHENTICATED_WEBHOOK_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED")
# Endpoints that may hold a thread for long: admitted by the gate before their body is read.
# Webhooks are not admitted: Label Studio sends annotation events without credentials, and
# anonymous callers must not be able to hold the slots /predict needs (nor make unknown events 503).
ADMITTED_ENDPOINTS = ("predict", "train")
# `model.predict(tasks, context=..., **params)`: params may not name its positional arguments
# (`context` is taken out of params and passed by name).
PREDICT_ARGUMENTS = frozenset({"self", "tasks"})


def _error(status: int, detail: str, headers: Optional[dict] = None, tb: Optional[str] = None) -> Response:
    payload = {"status": status, "detail": detail}
    if tb:
        payload["traceback"] = tb
    response = jsonify(payload)
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def _task_problem(task: Any, index: int) -> Optional[str]:
    if not isinstance(task, dict):
        return f"tasks[{index}] is not a JSON object"
    if not isinstance(task.get("data"), dict):
        return f"tasks[{index}] (id {task.get('id')}) has no 'data' object"
    return None


class MLServer:
    """Request handling bound to one model class; `init_app` wires it into Flask."""

    def __init__(self, model_class: Type[LabelStudioMLBase], settings: Settings, model_kwargs=None):
        self.model_class = model_class
        self.settings = settings
        self.model_kwargs = model_kwargs or {}
        self.metrics = RequestMetrics()
        self.gate = gate_from_settings(settings)

    def serve_on_threads(self, threads: int) -> None:
        """The server runs this app on `threads` threads (gunicorn_support.py tells each gunicorn
        worker, before it serves): size the gate so that `RESERVED_THREADS` of them stay free."""
        self.settings = self.settings.replace(threads=threads)
        self.gate = gate_from_settings(self.settings)

    # ----- helpers -----------------------------------------------------------------------------
    def new_model(self, project, label_config=None) -> LabelStudioMLBase:
        return self.model_class(project_id=project_id_from(project), label_config=label_config, settings=self.settings,
                                **self.model_kwargs)

    def _json_body(self) -> Dict[str, Any]:
        """The request's JSON object, read within a deadline and with a nesting limit (request_body.py)."""
        return parse_json_object(read_body(request, self.settings), self.settings.max_json_depth)

    @property
    def auth_enabled(self) -> bool:
        return bool(self.settings.basic_auth_user and self.settings.basic_auth_pass)

    def authenticated(self) -> bool:
        auth = request.authorization
        if not auth or auth.type != "basic":
            return False
        user_ok = hmac.compare_digest((auth.username or "").encode(), self.settings.basic_auth_user.encode())
        pass_ok = hmac.compare_digest((auth.password or "").encode(), self.settings.basic_auth_pass.encode())
        return user_ok and pass_ok

    # ----- endpoints ---------------------------------------------------------------------------
    def health(self):
        body = {"status": "UP", "model_class": self.model_class.__name__}
        body.update(self.model_class.backend_status(self.settings, **self.model_kwargs))
        return jsonify(body)

    def setup(self):
        data = self._json_body()
        if "project" not in data:
            raise BadRequest("'project' is required")
        schema = data.get("schema")
        if schema is not None and not isinstance(schema, str):
            raise BadRequest("'schema' must be the labeling config XML string")
        hostname, access_token = data.get("hostname"), data.get("access_token")
        if hostname not in (None, "") and not valid_label_studio_url(hostname):
            raise BadRequest("'hostname' must be Label Studio's http(s) URL")
        if access_token is not None and not isinstance(access_token, str):
            raise BadRequest("'access_token' must be a string")
        model = self.new_model(data["project"], schema)
        # Label Studio sends Connect Model's "Extra params" as they are now with every /setup (none,
        # or {}, once the field is cleared): they replace the stored ones (written only on a change).
        model.set_extra_params(data.get("extra_params") or {})
        model.set_label_studio_access(hostname, access_token)
        return jsonify({"model_version": str(model.model_version)})

    def predict(self):
        """One entry in `results` per task, in order. A problem with a task (no `data`, missing
        media, the model failing on it) is reported in that task's entry, whatever the number of
        tasks; only a bad request or a labeling config that cannot be served fails the request."""
        data = self._json_body()
        tasks = data.get("tasks")
        if not isinstance(tasks, list):
            raise BadRequest("'tasks' must be a list of tasks")
        label_config = data.get("label_config")
        if label_config is not None and not isinstance(label_config, str):
            raise BadRequest("'label_config' must be the labeling config XML string")
        params = data.get("params") or {}
        if not isinstance(params, dict):
            raise BadRequest("'params' must be a JSON object")
        taken = sorted(set(params) & PREDICT_ARGUMENTS)
        if taken:
            raise BadRequest(f"'params' must not hold {', '.join(map(repr, taken))}: predict() takes it from the request itself")
        params = dict(params)
        context = params.pop("context", None) or None
        if not tasks:
            return jsonify({"results": []})

        problems = [_task_problem(task, i) for i, task in enumerate(tasks)]
        with self.gate.slot():
            model = self.new_model(data.get("project"), label_config)
            if not model.label_config:
                raise BadRequest(f"No labeling config for project '{model.project_id}': call /setup first "
                                 "(Label Studio does when a model is connected) or send 'label_config' with /predict")
            version = str(model.model_version)
            valid = [task for task, problem in zip(tasks, problems) if not problem]
            queued = self._enqueue_long_tasks(model, valid, params, version) if self.settings.background_jobs else {}
            now = [task for task in valid if id(task) not in queued]
            predictions = self._predict_in_turns(model, now, context, params, version)

        results, it = [], iter(predictions)  # one per task predicted now (label_studio_ml/isolation.py)
        for task, problem in zip(tasks, problems):
            if problem:
                logger.warning("Task skipped: %s", problem)
                results.append(task_error(version, problem))
            elif id(task) in queued:
                results.append([])  # Label Studio stores nothing for it; the worker uploads the prediction
            else:
                results.append(next(it))
        body = {"results": results}
        if queued:
            body["jobs"] = [{"task": task.get("id"), "job_id": queued[id(task)]} for task in valid if id(task) in queued]
        return jsonify(body)

    def _enqueue_long_tasks(self, model, tasks: List[dict], params: dict, version: str) -> Dict[int, str]:
        """Tasks the model marks as long go to a background job (`{id(task): job id}`).

        Label Studio gets an empty list for such a task at once (never a timeout): it accepts a
        list of predictions per task and so stores none now, then the worker uploads the real one.
        An empty placeholder prediction would stay beside it, with the same model version."""
        queued = {}
        reference = jobs.model_reference(self.model_class)
        for task in tasks:
            if not model.runs_in_background(task):
                continue
            job_id = jobs.enqueue(
                self.settings, jobs.run_prediction_job, reference, model.project_id, model.label_config, [task], params,
                job_id=jobs.stable_job_id("predict", model.project_id, task.get("id"), version, model.label_config),
                description=f"predict task {task.get('id')} of project {model.project_id}",
            )
            queued[id(task)] = job_id
        return queued

    def _predict_in_turns(self, model, tasks: List[dict], context, params, version: str) -> List[dict]:
        """Predict `tasks` in chunks of `PREDICT_CHUNK_SIZE` (32): between chunks the gate lets
        requests that wait run first, so a request of 10,000 tasks neither starves the others nor
        holds more than one chunk's media at a time."""
        size = max(1, self.settings.predict_chunk_size)
        predictions = []
        for start in range(0, len(tasks), size):
            if start:
                self.gate.take_turn()
            predictions.extend(self._predict_isolated(model, tasks[start:start + size], context, params, version))
        return predictions

    def _predict_isolated(self, model, tasks: List[dict], context, params, version: str) -> List[dict]:
        """Predict a batch; if the model fails on it, task by task (label_studio_ml/isolation.py)."""
        outcomes = run_isolated(lambda batch: self._call_predict(model, batch, context, params, version), tasks,
                                what=lambda task: f"Task {task.get('id')}")
        return [task_error(version, outcome.detail) if isinstance(outcome, TaskFailed) else outcome
                for outcome in outcomes]

    @staticmethod
    def _call_predict(model, tasks, context, params, version) -> List[dict]:
        return normalize_predictions(model.predict(tasks, context=context, **params), version)

    def webhook(self, default_event: Optional[str] = None):
        data = self._json_body()
        if default_event is None:
            event = data.pop("action", None)
            if not isinstance(event, str):
                raise BadRequest("Webhook body must carry an 'action'")
        else:
            event = default_event
            data.pop("action", None)
        if event not in self.model_class.TRAIN_EVENTS:
            return jsonify({"status": "Unknown event"}), 200
        if self.auth_enabled and not g.authenticated:
            if event not in UNAUTHENTICATED_WEBHOOK_EVENTS:
                raise Unauthorized("Authentication required")
            data = confirmed_annotation_event(self.settings, event, data)

        project = data.get("project")
        if isinstance(project, dict):
            project_id, label_config = project.get("id"), project.get("label_config")
        else:  # older /train form: {"annotations": [...], "project": "<id>.<ts>", "label_config": ...}
            project_id, label_config = project, data.get("label_config")
        if project_id in (None, ""):
            raise BadRequest("Webhook body must carry 'project' with its 'id'")
        if label_config is not None and not isinstance(label_config, str):
            raise BadRequest("'label_config' must be the labeling config XML string")

        if event == "START_TRAINING" and self.settings.background_jobs and not self.model_class.TRAINS_IN_BACKGROUND:
            job_id = jobs.enqueue(self.settings, jobs.run_fit_job, jobs.model_reference(self.model_class),
                                  str(project_id_from(project_id)), label_config, event, data,
                                  description=f"train project {project_id}")
            return jsonify({"result": {"job_id": job_id, "status": "queued"}, "status": "ok"}), 201
        model = self.new_model(project_id, label_config)
        if g.authenticated or not self.auth_enabled:
            result = json.loads(json.dumps(model.fit(event, data), default=str))
        else:  # unauthenticated annotation webhooks may train, but never read anything back
            self._fit_answering_nothing(model, event, data)
            result = None
        return jsonify({"result": result, "status": "ok"}), 201

    @staticmethod
    def _fit_answering_nothing(model, event: str, data: dict) -> None:
        """`fit` for an unauthenticated caller: a failure is logged in full, but the answer is the same
        422 whatever went wrong, so that it reveals no path, file name or whether a file exists."""
        try:
            model.fit(event, data)
        except Exception as exc:
            detail = exc.detail if isinstance(exc, MLBackendError) else f"{type(exc).__name__}: {exc}"
            logger.error("%s webhook for project %s failed: %s", event, model.project_id, detail,
                         exc_info=not isinstance(exc, MLBackendError))
            raise MLBackendError("The webhook could not be processed; the backend's log says why", status_code=422) from None

    def train(self):
        return self.webhook(default_event="START_TRAINING")

    def versions(self):
        project = request.args.get("project")
        if project is None and request.content_length:
            project = self._json_body().get("project")
        model = self.new_model(project)
        return jsonify({"versions": [str(v) for v in model.available_versions()]})

    def job(self, job_id: str):
        status = jobs.job_status(self.settings, job_id)
        if status is None:
            raise NotFound(f"No job {job_id}")
        return jsonify(status)

    def metrics_view(self):
        snapshot = self.metrics.snapshot()
        gauges = self.gate.figures()
        status = self.model_class.backend_status(self.settings, **self.model_kwargs)
        wants_text = request.args.get("format") == "prometheus" or (
            "text/plain" in request.headers.get("Accept", "") and "application/json" not in request.headers.get("Accept", "")
        )
        if wants_text:
            return Response(to_prometheus(snapshot, gauges), mimetype="text/plain; version=0.0.4")
        if self.settings.background_jobs:
            try:
                snapshot.update(jobs.queue_figures(self.settings))
            except Exception as exc:  # metrics must answer even when Redis does not
                snapshot["jobs_error"] = f"{type(exc).__name__}: {exc}"
        snapshot.update(gauges)
        snapshot["model_class"] = self.model_class.__name__
        snapshot.update(status)
        return jsonify(snapshot)


def init_app(model_class: Type[LabelStudioMLBase], basic_auth_user: Optional[str] = None,
             basic_auth_pass: Optional[str] = None, model_kwargs: Optional[dict] = None,
             settings: Optional[Settings] = None) -> Flask:
    """Build the Flask app serving `model_class` with `settings` (default: the model class's
    `default_settings()`), which every model instance, the store, media downloads, jobs and the
    admission gate get; `model_kwargs` are passed to every model instance too.

    Basic auth (arguments, else the settings' `BASIC_AUTH_USER`/`BASIC_AUTH_PASS`) then guards every
    endpoint, except that Label Studio's annotation webhooks, which it sends without credentials, may
    reach `fit` (their answer carries no result), with what Label Studio's API confirms of them when
    the backend knows Label Studio (label_studio_api.py).
    """
    settings = settings or model_class.default_settings()
    settings = settings.replace(basic_auth_user=basic_auth_user or settings.basic_auth_user,
                                basic_auth_pass=basic_auth_pass or settings.basic_auth_pass)
    server = MLServer(model_class, settings, model_kwargs)
    app = Flask(model_class.__name__ + "-ml-backend")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_mb * 1024 * 1024
    app.config["JSON_SORT_KEYS"] = False
    app.extensions["ml_server"] = server

    routes = [
        ("/", "index", server.health, ["GET"]),
        ("/health", "health", server.health, ["GET"]),
        ("/setup", "setup", server.setup, ["POST"]),
        ("/predict", "predict", server.predict, ["POST"]),
        ("/webhook", "webhook", server.webhook, ["POST"]),
        ("/train", "train", server.train, ["POST"]),
        ("/versions", "versions", server.versions, ["GET"]),
        ("/metrics", "metrics", server.metrics_view, ["GET"]),
        ("/jobs/<job_id>", "jobs", server.job, ["GET"]),
    ]
    for rule, name, view, methods in routes:
        app.add_url_rule(rule, name, view, methods=methods)

    @app.before_request
    def _before():
        g.started = time.perf_counter()
        g.authenticated = server.auth_enabled and server.authenticated()
        # /webhook decides itself: Label Studio's annotation events arrive without credentials.
        if server.auth_enabled and not g.authenticated:
            if request.path != "/webhook":
                return _error(401, "Authentication required", {"WWW-Authenticate": 'Basic realm="Login required"'})
            limit = server.settings.webhook_max_mb_unauthenticated * 1024 * 1024
            if (request.content_length or 0) > limit:  # an annotation event is a few KB
                refuse_body(request)
                raise PayloadTooLarge(f"An unauthenticated webhook body may hold {limit // (1024 * 1024)} MB at most "
                                      "(WEBHOOK_MAX_MB_UNAUTHENTICATED)")
        if request.endpoint in ADMITTED_ENDPOINTS:  # before the body is read: a slow client holds a thread
            try:
                g.admission = server.gate.admit()
            except Overloaded:
                refuse_body(request)
                raise

    @app.teardown_request
    def _teardown(_exc):
        ticket = g.pop("admission", None)
        if ticket is not None:
            server.gate.leave(ticket)

    @app.after_request
    def _after(response):
        started = g.get("started")
        if started is not None:
            endpoint = request.url_rule.rule if request.url_rule else "unmatched"
            server.metrics.observe(endpoint, response.status_code, time.perf_counter() - started)
        return response

    @app.errorhandler(MLBackendError)
    def _ml_error(exc: MLBackendError):
        level = logging.ERROR if exc.status_code >= 500 else logging.WARNING
        logger.log(level, "%s %s -> %d: %s", request.method, request.path, exc.status_code, exc.detail)
        headers = dict(exc.headers)
        if exc.status_code == 401:
            headers.setdefault("WWW-Authenticate", 'Basic realm="Login required"')
        return _error(exc.status_code, exc.detail, headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        return _error(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        logger.error("%s %s failed: %s: %s", request.method, request.path, type(exc).__name__, exc, exc_info=exc)
        tb = traceback.format_exc() if server.settings.debug else None
        return _error(500, f"Internal error: {type(exc).__name__}: {exc}", tb=tb)

    if settings.label_studio_check:
        threading.Thread(target=lambda: logger.info(check_label_studio_connection(settings)), daemon=True,
                         name="label-studio-check").start()
    return app

"""A tiny stand-in for Label Studio: media endpoints, prediction uploads, the annotation, task
and project reads that confirm unauthenticated webhooks, and a project's task list (training)."""

import itertools
import threading
import time
import uuid

import jwt
from flask import Flask, Response, abort, jsonify, request

PNG_BYTES = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)
LEGACY_TOKEN = "0123456789abcdef0123456789abcdef01234567"


def personal_access_token() -> str:
    return jwt.encode({"token_type": "refresh", "exp": int(time.time()) + 3600, "jti": uuid.uuid4().hex}, "test-signing-key-0123456789abcdef0123", "HS256")


def make_fake_label_studio():
    app = Flask("fake-label-studio")
    state = {"valid_access": set(), "refreshes": 0, "downloads": 0, "predictions": [], "fail_uploads": 0,
             "annotations": {}, "tasks": {}, "projects": {}, "reads": 0, "prediction_ids": itertools.count(1),
             "public_requests": [], "release_slow": threading.Event(), "release_trickle": threading.Event(),
             "slow_seconds": 3}
    app.config["state"] = state

    def authorized():
        header = request.headers.get("Authorization", "")
        if header == "Token " + LEGACY_TOKEN:
            return True
        return header.startswith("Bearer ") and header[7:] in state["valid_access"]

    @app.post("/api/token/refresh/")
    def refresh():
        token = (request.get_json(silent=True) or {}).get("refresh", "")
        try:
            claims = jwt.decode(token, "test-signing-key-0123456789abcdef0123", algorithms=["HS256"])
        except jwt.PyJWTError:
            return jsonify({"detail": "invalid"}), 401
        if claims.get("token_type") != "refresh":
            return jsonify({"detail": "invalid"}), 401
        state["refreshes"] += 1
        access = jwt.encode({"token_type": "access", "exp": int(time.time()) + 300, "jti": uuid.uuid4().hex}, "test-signing-key-0123456789abcdef0123", "HS256")
        state["valid_access"].add(access)
        return jsonify({"access": access})

    @app.get("/api/current-user/whoami")
    def whoami():
        return (jsonify({"id": 1}), 200) if authorized() else (jsonify({"detail": "no"}), 401)

    def serve_file():
        if not authorized():
            return jsonify({"detail": "Authentication credentials were not provided."}), 401
        state["downloads"] += 1
        return Response(PNG_BYTES, mimetype="image/png")

    @app.post("/api/predictions/")
    def create_prediction():
        if not authorized():
            return jsonify({"detail": "Authentication credentials were not provided."}), 401
        if state["fail_uploads"] > 0:
            state["fail_uploads"] -= 1
            return jsonify({"detail": "temporarily unavailable"}), 503
        body = request.get_json()
        prediction = dict(body, id=next(state["prediction_ids"]), created_at="2026-01-01T00:00:00Z",
                          updated_at="2026-01-01T00:00:00Z")
        state["predictions"].append(prediction)
        return jsonify(prediction), 201

    @app.get("/api/predictions/")
    def list_predictions():
        if not authorized():
            return jsonify({"detail": "Authentication credentials were not provided."}), 401
        task = request.args.get("task", type=int)
        return jsonify([p for p in state["predictions"] if task is None or p.get("task") == task])

    @app.delete("/api/predictions/<int:prediction_id>/")
    def delete_prediction(prediction_id):
        if not authorized():
            return jsonify({"detail": "Authentication credentials were not provided."}), 401
        kept = [p for p in state["predictions"] if p["id"] != prediction_id]
        if len(kept) == len(state["predictions"]):
            return jsonify({"detail": "Not found."}), 404
        state["predictions"][:] = kept
        return "", 204

    def stored(kind, object_id):
        if not authorized():
            return jsonify({"detail": "Authentication credentials were not provided."}), 401
        state["reads"] += 1
        item = state[kind].get(object_id)
        return (jsonify(item), 200) if item is not None else (jsonify({"detail": "Not found."}), 404)

    @app.get("/api/annotations/<int:object_id>/")
    def annotation(object_id):
        return stored("annotations", object_id)

    @app.get("/api/tasks/<int:object_id>/")
    def task(object_id):
        answer, status = stored("tasks", object_id)
        if status == 200:  # like Label Studio: a task carries its predictions
            predictions = [p for p in state["predictions"] if p.get("task") == object_id]
            answer = jsonify(dict(answer.get_json(), predictions=predictions))
        if status == 200 and request.args.get("resolve_uri", "true").lower() != "false":
            # like Label Studio: storage URIs become its relative proxy links by default
            data = {key: f"/tasks/{object_id}/resolve/?fileuri={value}" if str(value).startswith("s3://") else value
                    for key, value in answer.get_json()["data"].items()}
            return jsonify(dict(answer.get_json(), data=data)), 200
        return answer, status

    @app.get("/api/tasks/")
    def list_tasks():
        """Paginated like Label Studio's: `{"tasks", "total", ...}`, 404 past the last page."""
        if not authorized():
            return jsonify({"detail": "Authentication credentials were not provided."}), 401
        project = request.args.get("project", type=int)
        tasks = [t for t in state["tasks"].values() if t.get("project") == project]
        if request.args.get("only_annotated", "").lower() == "true":
            tasks = [t for t in tasks if t.get("annotations")]
        page, size = request.args.get("page", 1, type=int), request.args.get("page_size", 100, type=int)
        if page > 1 and (page - 1) * size >= len(tasks):
            return jsonify({"detail": "Invalid page."}), 404
        state["task_list_pages"] = state.get("task_list_pages", 0) + 1
        return jsonify({"tasks": tasks[(page - 1) * size:page * size], "total": len(tasks),
                        "total_annotations": sum(len(t.get("annotations") or []) for t in tasks),
                        "total_predictions": 0})

    @app.get("/api/projects/<int:object_id>/")
    def project(object_id):
        return stored("projects", object_id)

    # Label Studio 1.23 with its default file storage serves uploads at /data/upload/ and answers
    # 404 on the storage proxy; with cloud-backed default storage only the proxy serves them.
    state["uploads_via"] = "legacy"
    state["upload_requests"] = []

    def serve_upload(route, name):
        state["upload_requests"].append(route)
        if name.startswith("missing") or state["uploads_via"] != route:
            abort(404)
        if name.startswith("slow"):
            time.sleep(1)
        return serve_file()

    @app.get("/data/upload/<int:project>/<name>")
    def upload(project, name):
        return serve_upload("legacy", name)

    @app.get("/storage-data/uploaded/")
    def storage_proxy():
        return serve_upload("proxy", request.args.get("filepath", "").rsplit("/", 1)[-1])

    @app.get("/tasks/<int:task_id>/presign/")
    def presign(task_id):
        return serve_file()

    @app.get("/public/<name>")
    def public(name):
        state["public_requests"].append(name)
        if name == "slow.png":
            state["release_slow"].wait(state["slow_seconds"])  # or until a test releases it
        if name == "trickle.png":  # half the file, then the rest once a test releases it
            def halves():
                yield PNG_BYTES[:len(PNG_BYTES) // 2]
                state["release_trickle"].wait(30)
                yield PNG_BYTES[len(PNG_BYTES) // 2:]
            return Response(halves(), mimetype="image/png", headers={"Content-Length": str(len(PNG_BYTES))})
        if name == "huge.png":
            return Response(b"0" * 2048, mimetype="image/png")
        return Response(PNG_BYTES, mimetype="image/png")

    return app

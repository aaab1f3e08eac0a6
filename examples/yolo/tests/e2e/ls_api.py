"""What a Label Studio user does, through Label Studio's API only: create a project, upload media,
connect a model, retrieve predictions, submit annotations, start training."""

import os
from typing import Dict, List

import requests


def create_project(ls, title: str, label_config: str) -> int:
    return ls.client().projects.create(title=title, label_config=label_config).id


def upload_files(ls, project_id: int, paths: List[str]) -> Dict[str, dict]:
    """Import files by upload (the "Upload Files" dialog): tasks get `/data/upload/<project>/<uuid>-<name>`
    URLs that only Label Studio serves, with the token. Returns `{file name: task}`."""
    # one form field per file: Label Studio keeps one file per field name
    files = [(os.path.basename(p), (os.path.basename(p), open(p, "rb"))) for p in paths]
    try:
        response = requests.post(f"{ls.url}/api/projects/{project_id}/import", headers=ls.headers, files=files,
                                 timeout=120)
    finally:
        for _, (_, f) in files:
            f.close()
    assert response.status_code == 201, response.text
    assert response.json()["task_count"] == len(paths), response.text
    by_name = {}
    for task in tasks_of(ls, project_id):
        url = next(iter(task["data"].values()))
        assert url.startswith(f"/data/upload/{project_id}/"), url
        by_name[url.rsplit("/", 1)[1].split("-", 1)[1]] = task  # Label Studio prefixes "<uuid>-"
    assert set(by_name) >= {os.path.basename(p) for p in paths}, by_name
    return by_name


def import_tasks(ls, project_id: int, tasks: List[dict]) -> None:
    """Import task JSON (the data of each task), as "Upload Files" does with a .json file."""
    response = requests.post(f"{ls.url}/api/projects/{project_id}/import", headers=ls.headers, json=tasks, timeout=60)
    assert response.status_code == 201, response.text


def tasks_of(ls, project_id: int) -> List[dict]:
    """Every task of the project with its stored predictions, as the Data Manager lists them."""
    tasks, page = [], 1
    while True:
        response = requests.get(f"{ls.url}/api/tasks", headers=ls.headers, timeout=60,
                                params={"project": project_id, "fields": "all", "page": page, "page_size": 100})
        assert response.status_code == 200, response.text
        body = response.json()
        tasks += body["tasks"]
        if len(tasks) >= body["total"] or not body["tasks"]:
            return tasks
        page += 1


def connect_model(ls, project_id: int, backend_url: str, title: str = "YOLO", basic_auth=None) -> dict:
    """Settings > Model > Connect Model (with "Use Basic Authentication" when `basic_auth` is a
    (user, password) pair). Label Studio checks /health, calls /setup and registers
    `<url>/webhook` for all the project's events."""
    auth = {"auth_method": "NONE"}
    if basic_auth:
        auth = {"auth_method": "BASIC_AUTH", "basic_auth_user": basic_auth[0], "basic_auth_pass": basic_auth[1]}
    response = requests.post(f"{ls.url}/api/ml", headers=ls.headers, timeout=60, json={
        "url": backend_url, "project": project_id, "title": title, "is_interactive": True, "extra_params": "", **auth,
    })
    assert response.status_code == 201, response.text
    backend = response.json()
    assert backend["state"] == "CO", backend  # connected: /health and /setup answered
    return backend


def retrieve_predictions(ls, project_id: int) -> None:
    """The Data Manager action "Retrieve Predictions" on every task of the project."""
    response = requests.post(f"{ls.url}/api/dm/actions", headers=ls.headers, timeout=300,
                             params={"id": "retrieve_tasks_predictions", "project": project_id},
                             json={"selectedItems": {"all": True, "excluded": []}})
    assert response.status_code == 200, response.text


def start_training(ls, ml_backend_id: int) -> None:
    """Settings > Model > Start Training."""
    response = requests.post(f"{ls.url}/api/ml/{ml_backend_id}/train", headers=ls.headers, json={}, timeout=120)
    assert response.status_code == 200, response.text


def create_annotation(ls, task_id: int, result: List[dict]) -> dict:
    """A user submits an annotation (Label Studio then sends ANNOTATION_CREATED to the webhooks)."""
    response = requests.post(f"{ls.url}/api/tasks/{task_id}/annotations", headers=ls.headers, timeout=120,
                             json={"result": result, "was_cancelled": False, "ground_truth": False})
    assert response.status_code == 201, response.text
    return response.json()


def only_prediction(task: dict) -> dict:
    predictions = task["predictions"]
    assert len(predictions) == 1, (task["id"], task["data"], predictions)
    return predictions[0]


def backend_requests(backend_url: str, auth=None) -> Dict[str, int]:
    """Requests the backend served per endpoint (its /metrics; one gunicorn worker)."""
    endpoints = requests.get(backend_url + "/metrics", timeout=10, auth=auth).json()["endpoints"]
    return {path: figures["requests"] for path, figures in endpoints.items()}


def backend_errors(backend_url: str, auth=None) -> Dict[str, int]:
    endpoints = requests.get(backend_url + "/metrics", timeout=10, auth=auth).json()["endpoints"]
    return {path: figures["errors_4xx"] + figures["errors_5xx"] for path, figures in endpoints.items()
            if figures["errors_4xx"] + figures["errors_5xx"]}


def interactive_annotating(ls, ml_backend_id: int, task_id: int, regions: List[dict]) -> dict:
    """A smart-tool click or box in the labeling UI: Label Studio forwards the annotator's regions
    (`context.result`) to the backend as an interactive /predict and answers `{"data": results[0]}`
    (or `{"errors": [...]}`, still with status 200)."""
    response = requests.post(f"{ls.url}/api/ml/{ml_backend_id}/interactive-annotating", headers=ls.headers,
                             timeout=120, json={"task": task_id, "context": {"result": regions}})
    assert response.status_code == 200, response.text
    return response.json()

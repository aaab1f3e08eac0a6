"""With basic auth on, Label Studio's credential-less annotation webhooks train only on what Label
Studio's API confirms (when the backend knows Label Studio)."""

import json
import socket
from contextlib import contextmanager

import pytest
import requests

from fake_label_studio import LEGACY_TOKEN, make_fake_label_studio, personal_access_token
from helpers import serve_in_thread
from label_studio_ml.api import init_app
from sdk_models import EchoModel

STORED_CONFIG = '<View><Text name="text" value="$text"/><Choices name="label" toName="text"><Choice value="real"/></Choices></View>'
FORGED_CONFIG = STORED_CONFIG.replace("real", "forged")


def stored_result(choice):
    return [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [choice]}}]


@pytest.fixture
def label_studio(settings):
    """A fake Label Studio holding annotation 8 of task 10 in project 5: its state, and settings
    naming it with a legacy token."""
    app = make_fake_label_studio()
    state = app.config["state"]
    state["annotations"][8] = {"id": 8, "task": 10, "project": 5, "result": stored_result("real")}
    state["tasks"][10] = {"id": 10, "project": 5, "data": {"text": "stored text", "video": "s3://bucket/v.mp4"}}
    state["projects"][5] = {"id": 5, "title": "p", "label_config": STORED_CONFIG}
    with serve_in_thread(app) as base:
        yield state, settings.replace(label_studio_url=base, label_studio_api_key=LEGACY_TOKEN)


@contextmanager
def backend_with(settings):
    """A backend with basic auth u:p, so that annotation webhooks without credentials are checked."""
    with serve_in_thread(init_app(EchoModel, basic_auth_user="u", basic_auth_pass="p", settings=settings)) as base:
        yield base


def forged_webhook(action="ANNOTATION_CREATED", annotation_id=8):
    """What anyone could send: the annotation's id, with a result, task and config of their own."""
    return {"action": action,
            "annotation": {"id": annotation_id, "task": 10, "project": 5, "result": stored_result("forged")},
            "task": {"id": 10, "data": {"text": "/etc/passwd"}},
            "project": {"id": 5, "label_config": FORGED_CONFIG}}


def last_fit(settings, project="5"):
    recorded = EchoModel(project_id=project, settings=settings).get("last_fit")
    return json.loads(recorded) if recorded else None


@pytest.mark.parametrize("token", ["legacy", "personal"])
@pytest.mark.parametrize("action", ["ANNOTATION_CREATED", "ANNOTATION_UPDATED"])
def test_unauthenticated_webhook_trains_on_what_label_studio_holds(label_studio, token, action):
    state, settings = label_studio
    if token == "personal":
        settings = settings.replace(label_studio_api_key=personal_access_token())
    with backend_with(settings) as backend:
        response = requests.post(backend + "/webhook", json=forged_webhook(action))
    assert response.status_code == 201, response.text
    assert response.json() == {"result": None, "status": "ok"}
    fit = last_fit(settings)
    assert fit["annotation"]["result"] == stored_result("real")
    assert fit["task"]["data"] == {"text": "stored text", "video": "s3://bucket/v.mp4"}  # storage URIs as stored
    assert fit["label_config"] == STORED_CONFIG
    assert state["reads"] == 3  # annotation, task, project


def test_annotation_unknown_to_label_studio_is_refused(label_studio):
    _, settings = label_studio
    with backend_with(settings) as backend:
        response = requests.post(backend + "/webhook", json=forged_webhook(annotation_id=99))
        assert response.status_code == 403
        assert response.json()["detail"] == "Label Studio has no annotation 99: webhook not confirmed"
        assert last_fit(settings) is None
        assert requests.get(backend + "/health", auth=("u", "p")).status_code == 200


def test_deletion_is_confirmed_only_when_label_studio_no_longer_holds_the_annotation(label_studio):
    state, settings = label_studio
    deletion = {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 8}], "project": {"id": 5}}
    with backend_with(settings) as backend:
        response = requests.post(backend + "/webhook", json=deletion)
        assert response.status_code == 403 and "still holds annotation 8" in response.json()["detail"]
        assert last_fit(settings) is None

        del state["annotations"][8]
        assert requests.post(backend + "/webhook", json=deletion).status_code == 201
    assert EchoModel(project_id="5", settings=settings).get("last_event") == "ANNOTATIONS_DELETED"


def test_a_bulk_deletion_costs_a_bounded_number_of_label_studio_calls(label_studio):
    state, settings = label_studio
    deletion = {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": i} for i in range(100, 400)],
                "project": {"id": 5}}
    with backend_with(settings) as backend:
        assert requests.post(backend + "/webhook", json=deletion).status_code == 201
    assert state["reads"] == 10 + 1  # MAX_CHECKED_DELETIONS annotations, the project


@pytest.mark.parametrize("body, needle", [
    ({"action": "ANNOTATION_CREATED", "project": {"id": 5}}, "annotation's numeric 'id'"),
    ({"action": "ANNOTATION_CREATED", "annotation": {"id": "8; drop"}, "project": {"id": 5}}, "annotation's numeric 'id'"),
    ({"action": "ANNOTATION_CREATED", "annotation": {"id": "\u00b2"}, "project": {"id": 5}}, "annotation's numeric 'id'"),
    ({"action": "ANNOTATIONS_DELETED", "annotations": "8", "project": {"id": 5}}, "a list of {'id': ...}"),
])
def test_malformed_unauthenticated_webhooks_are_400(label_studio, body, needle):
    with backend_with(label_studio[1]) as backend:
        response = requests.post(backend + "/webhook", json=body)
    assert response.status_code == 400 and needle in response.json()["detail"]


def test_unreachable_label_studio_is_a_424_and_nothing_trains(settings):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once closed
    settings = settings.replace(label_studio_url=f"http://127.0.0.1:{port}", label_studio_api_key=LEGACY_TOKEN)
    with backend_with(settings) as backend:
        response = requests.post(backend + "/webhook", json=forged_webhook())
    assert response.status_code == 424
    assert "could not be asked for annotation 8" in response.json()["detail"]
    assert last_fit(settings) is None


def test_authenticated_webhooks_are_not_checked(label_studio):
    state, settings = label_studio
    with backend_with(settings) as backend:
        response = requests.post(backend + "/webhook", json=forged_webhook(annotation_id=99), auth=("u", "p"))
    assert response.status_code == 201
    assert last_fit(settings)["annotation"]["result"] == stored_result("forged")
    assert state["reads"] == 0


def test_without_label_studio_settings_unauthenticated_webhooks_are_refused(settings):
    with backend_with(settings) as backend:
        response = requests.post(backend + "/webhook", json=forged_webhook())
        assert response.status_code == 403
        detail = response.json()["detail"]
        assert "LABEL_STUDIO_URL" in detail and "LABEL_STUDIO_API_KEY" in detail
        assert last_fit(settings) is None
        assert requests.post(backend + "/webhook", json=forged_webhook(), auth=("u", "p")).status_code == 201

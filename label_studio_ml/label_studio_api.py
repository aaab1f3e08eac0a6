"""Talking back to Label Studio through its SDK: uploading predictions (background jobs) and
confirming annotation webhooks that arrive without credentials.

Label Studio sends `ANNOTATION_CREATED`, `ANNOTATION_UPDATED` and `ANNOTATIONS_DELETED` without the
Basic auth header even when the backend requires it, so with basic auth on such a webhook could
come from anyone. When the backend knows Label Studio (`LABEL_STUDIO_URL` and
`LABEL_STUDIO_API_KEY`), it takes nothing from such a body but ids: the annotation, its task and
its project's labeling config are read from Label Studio's API, and a webhook Label Studio does not
confirm (an annotation it has no record of, a deletion of one it still has) is refused with a 403.
Without those settings the body is used as sent (a warning says so once).
"""

import logging
from typing import Any, Optional

from .exceptions import BadRequest, FailedDependency, Forbidden
from .media import label_studio_api_key, label_studio_url
from .utils import env_float

logger = logging.getLogger(__name__)

_warned_unverified = False


def label_studio_client():
    """An SDK client for the configured Label Studio, or None when URL or API key is missing.
    Legacy tokens and Personal Access Tokens both work (the SDK refreshes the latter)."""
    from label_studio_sdk.client import LabelStudio

    base_url, api_key = label_studio_url(), label_studio_api_key()
    if not base_url or not api_key:
        return None
    return LabelStudio(base_url=base_url, api_key=api_key, timeout=env_float("MEDIA_READ_TIMEOUT", 30.0))


def _as_dict(item: Any) -> dict:
    return item.model_dump(mode="json") if hasattr(item, "model_dump") else dict(item)


def _fetch(what: str, getter, object_id) -> Optional[dict]:
    """The object from Label Studio, None if it answers 404; 424 when it cannot be asked."""
    from label_studio_sdk.core.api_error import ApiError

    try:
        return _as_dict(getter(object_id))
    except ApiError as exc:
        if exc.status_code == 404:
            return None
        raise FailedDependency(f"Label Studio answered HTTP {exc.status_code} when asked for {what} {object_id}; "
                               "the webhook cannot be confirmed") from exc
    except Exception as exc:  # connection refused, timeout, ...
        raise FailedDependency(f"Label Studio at {label_studio_url()} could not be asked for {what} {object_id} "
                               f"({type(exc).__name__}: {exc}); the webhook cannot be confirmed") from exc


def _object_id(value: Any, what: str) -> int:
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).isdigit():
        raise BadRequest(f"Webhook body must carry the {what}'s numeric 'id'")
    return int(value)


def confirmed_annotation_event(event: str, data: dict) -> dict:
    """`data` of an unauthenticated annotation webhook, with its annotation, task and project
    replaced by what Label Studio's API holds (see the module docstring)."""
    global _warned_unverified
    client = label_studio_client()
    if client is None:
        if not _warned_unverified:
            _warned_unverified = True
            logger.warning("Annotation webhooks arrive without credentials and cannot be confirmed: set "
                           "LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY so that only annotations Label Studio "
                           "really holds train the model")
        return data

    if event == "ANNOTATIONS_DELETED":
        annotations = data.get("annotations")
        if not isinstance(annotations, list) or not annotations:
            raise BadRequest("ANNOTATIONS_DELETED must carry 'annotations', a list of {'id': ...}")
        for annotation in annotations:
            annotation_id = _object_id(annotation, "annotation")
            if _fetch("annotation", client.annotations.get, annotation_id) is not None:
                raise Forbidden(f"Label Studio still holds annotation {annotation_id}: deletion not confirmed")
        project_id = _object_id(data.get("project"), "project")
    else:
        annotation_id = _object_id(data.get("annotation"), "annotation")
        annotation = _fetch("annotation", client.annotations.get, annotation_id)
        if annotation is None:
            raise Forbidden(f"Label Studio has no annotation {annotation_id}: webhook not confirmed")
        task = _fetch("task", client.tasks.get, str(_object_id(annotation.get("task"), "task")))
        if task is None:
            raise Forbidden(f"Label Studio has no task for annotation {annotation_id}: webhook not confirmed")
        project_id = _object_id(annotation.get("project") or task.get("project"), "project")
        data = dict(data, annotation=annotation, task=task)
    project = _fetch("project", client.projects.get, project_id)
    if project is None:
        raise Forbidden(f"Label Studio has no project {project_id}: webhook not confirmed")
    logger.info("%s for project %s confirmed by Label Studio", event, project_id)
    return dict(data, project=dict(project, id=project_id))

"""Talking back to Label Studio through its SDK: uploading predictions (background jobs), reading
a project's annotated tasks (training) and confirming annotation webhooks that arrive without
credentials.

Label Studio sends `ANNOTATION_CREATED`, `ANNOTATION_UPDATED` and `ANNOTATIONS_DELETED` without the
Basic auth header even when the backend requires it, so with basic auth on such a webhook could
come from anyone. When the backend knows Label Studio (`LABEL_STUDIO_URL` and
`LABEL_STUDIO_API_KEY`), it takes nothing from such a body but ids: the annotation, its task and
its project's labeling config are read from Label Studio's API, and a webhook Label Studio does not
confirm (an annotation it has no record of, a deletion of one it still has) is refused with a 403.
What this can confirm: that the annotation exists in a Label Studio the API key can read (any of
its projects), or for a deletion, that (the first `MAX_CHECKED_DELETIONS` of) the ids are gone.
Without those settings such a webhook is refused (403, naming the settings that enable it): the
body alone would let anyone train on any path it names and write files under `MODEL_ROOT`.
"""

import functools
import itertools
import logging
import re
from typing import Any, List, Optional

from .exceptions import BadRequest, FailedDependency, Forbidden
from .settings import Settings

logger = logging.getLogger(__name__)

# A bulk deletion lists many ids: so many API calls per unauthenticated request at the most.
MAX_CHECKED_DELETIONS = 10


def label_studio_client(settings: Settings, timeout: float = 60.0):
    """An SDK client for the Label Studio of the settings (one per URL, key and timeout, reused),
    or None when URL or API key is missing. Legacy tokens and Personal Access Tokens both work (the
    SDK refreshes the latter)."""
    if not settings.label_studio_url or not settings.label_studio_api_key:
        return None
    return _client(settings.label_studio_url, settings.label_studio_api_key, timeout)


@functools.lru_cache(maxsize=8)
def _client(base_url: str, api_key: str, timeout: float):
    from label_studio_sdk.client import LabelStudio

    return LabelStudio(base_url=base_url, api_key=api_key, timeout=timeout)


def _as_dict(item: Any) -> dict:
    return item.model_dump(mode="json") if hasattr(item, "model_dump") else dict(item)


def annotated_tasks(settings: Settings, project_id, page_size: int = 100) -> List[dict]:
    """Every annotated task of the project, with its annotations, as Label Studio's API holds them
    (cloud storage URIs as stored, like webhooks carry them). FailedDependency when the backend
    does not know Label Studio."""
    client = label_studio_client(settings)
    if client is None:
        raise FailedDependency("Set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY (legacy token or Personal Access "
                               "Token) where the training runs: the annotations are read from Label Studio's API")
    tasks: List[dict] = []
    for page in itertools.count(1):
        pager = client.tasks.list(project=int(project_id), fields="all", only_annotated=True, resolve_uri=False,
                                  page=page, page_size=page_size)
        items = [_as_dict(task) for task in pager.items or []]
        tasks += items
        if len(items) < page_size or len(tasks) >= pager.response.total:
            logger.info("Read %d annotated tasks of project %s from Label Studio", len(tasks), project_id)
            return tasks


def _fetch(settings: Settings, what: str, getter, object_id, **query) -> Optional[dict]:
    """The object from Label Studio, None if it answers 404; 424 when it cannot be asked (the
    details go to the log, not to the unauthenticated caller)."""
    from label_studio_sdk.core.api_error import ApiError

    options = {"additional_query_parameters": query} if query else None
    try:
        return _as_dict(getter(object_id, request_options=options))
    except ApiError as exc:
        if exc.status_code == 404:
            return None
        failure = f"HTTP {exc.status_code}"
    except Exception as exc:  # connection refused, timeout, ...
        failure = type(exc).__name__
        logger.warning("Label Studio at %s could not be asked for %s %s: %s", settings.label_studio_url, what, object_id,
                       exc)
    raise FailedDependency(f"Label Studio could not be asked for {what} {object_id} ({failure}); "
                           "the webhook cannot be confirmed")


def _object_id(value: Any, what: str) -> int:
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,18}", value):
        return int(value)
    raise BadRequest(f"Webhook body must carry the {what}'s numeric 'id'")


def confirmed_annotation_event(settings: Settings, event: str, data: dict) -> dict:
    """`data` of an unauthenticated annotation webhook, with its annotation, task and project
    replaced by what Label Studio's API holds (see the module docstring)."""
    client = label_studio_client(settings, timeout=settings.media_read_timeout)
    if client is None:
        logger.warning("Refused an unauthenticated %s webhook: set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY "
                       "so that the backend can confirm such webhooks with Label Studio", event)
        raise Forbidden("Annotation webhooks without credentials are accepted only when the backend can confirm "
                        "them with Label Studio: set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY on the backend")

    if event == "ANNOTATIONS_DELETED":
        annotations = data.get("annotations")
        if not isinstance(annotations, list) or not annotations:
            raise BadRequest("ANNOTATIONS_DELETED must carry 'annotations', a list of {'id': ...}")
        ids = [_object_id(annotation, "annotation") for annotation in annotations]
        for annotation_id in ids[:MAX_CHECKED_DELETIONS]:
            if _fetch(settings, "annotation", client.annotations.get, annotation_id) is not None:
                raise Forbidden(f"Label Studio still holds annotation {annotation_id}: deletion not confirmed")
        confirmed = {"annotations": [{"id": annotation_id} for annotation_id in ids]}
        project_id = _object_id(data.get("project"), "project")
    else:
        annotation_id = _object_id(data.get("annotation"), "annotation")
        annotation = _fetch(settings, "annotation", client.annotations.get, annotation_id)
        if annotation is None:
            raise Forbidden(f"Label Studio has no annotation {annotation_id}: webhook not confirmed")
        # resolve_uri=false: cloud storage URIs as stored (s3://...), as the webhook carries them,
        # not Label Studio's relative /tasks/<id>/resolve/ proxy links
        task = _fetch(settings, "task", client.tasks.get, str(_object_id(annotation.get("task"), "task")), resolve_uri=False)
        if task is None:
            raise Forbidden(f"Label Studio has no task for annotation {annotation_id}: webhook not confirmed")
        confirmed = {"annotation": annotation, "task": task}
        project_id = _object_id(annotation.get("project") or task.get("project"), "project")
    project = _fetch(settings, "project", client.projects.get, project_id)
    if project is None:
        raise Forbidden(f"Label Studio has no project {project_id}: webhook not confirmed")
    logger.info("%s for project %s confirmed by Label Studio", event, project_id)
    return dict(confirmed, project=dict(project, id=project_id))

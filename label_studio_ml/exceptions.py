"""Errors a model or the server raises to answer a request with a precise HTTP status.

The HTTP layer turns every `MLBackendError` into `{"status": <code>, "detail": "<message>"}`;
anything else becomes a 500 with the same shape.
"""


class MLBackendError(Exception):
    """Base class: carries the HTTP status the client should see."""

    status_code = 500
    # While predicting: True fails the whole request, False costs only the task it happened on
    # (label_studio_ml/isolation.py). Independent of the status code.
    fails_request = False

    def __init__(self, detail: str, status_code: int = None, headers: dict = None):
        super().__init__(detail)
        self.detail = detail
        if status_code is not None:
            self.status_code = status_code
        self.headers = headers or {}


class BadRequest(MLBackendError):
    """The request body or the labeling config is unusable (400)."""

    status_code = 400


class Unauthorized(MLBackendError):
    status_code = 401


class Forbidden(MLBackendError):
    status_code = 403


class NotFound(MLBackendError):
    """A file or resource named by the request does not exist (404)."""

    status_code = 404


class PayloadTooLarge(MLBackendError):
    status_code = 413


class FailedDependency(MLBackendError):
    """Something the request depends on (a media URL, Label Studio) could not be reached (424)."""

    status_code = 424


class ModelUnavailable(FailedDependency):
    """The model the labeling config names cannot be had (weights missing and not downloadable):
    every task would fail the same way, so the request fails (424) instead of storing an error
    prediction per task."""

    fails_request = True


class Overloaded(MLBackendError):
    """Too much work in flight: the client should retry later (503 + Retry-After)."""

    status_code = 503
    fails_request = True

    def __init__(self, detail: str, retry_after: int = 5):
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


class LabelConfigError(BadRequest):
    """The labeling config (or a model it names) cannot be served: fails the whole request (400),
    unlike a problem with one task's data."""

    fails_request = True


class TaskDataError(MLBackendError):
    """One task's data cannot be used (a media value that is no URL, a task id that is no integer
    where it goes into a URL): that task gets an error prediction, the others of its batch are
    predicted, whatever the batch size (422 is its status where it is raised outside `/predict`)."""

    status_code = 422


class RequestTimeout(MLBackendError):
    """The client did not send its request body in time (408)."""

    status_code = 408

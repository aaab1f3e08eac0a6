"""One rule for failures while predicting, used by the HTTP layer and by any backend that batches.

A problem with one task (its media is missing, its data is unusable, the model raised on it) costs
that task its prediction and nothing else, whether the request held one task or a thousand. A
problem with the request itself (the labeling config cannot be served, the server is overloaded)
fails the whole request.

Which is which is said by the exception's type (`MLBackendError.fails_request`), never by its HTTP
status: a missing media file (404) and an unknown `model_path` (400) are both 4xx, but only the
second is the request's fault. Any exception that is not an `MLBackendError` is a task failure and
is logged with its traceback: it is a bug somewhere, and the traceback is how it gets fixed.
"""

import logging
from dataclasses import dataclass
from typing import Any, Callable, List, Sequence, TypeVar, Union

from .exceptions import MLBackendError

logger = logging.getLogger(__name__)

Item = TypeVar("Item")


@dataclass(frozen=True)
class TaskFailed:
    """Stands in for the result of an item that failed on its own; `detail` says why."""

    detail: str


def fails_request(exc: BaseException) -> bool:
    return isinstance(exc, MLBackendError) and exc.fails_request


def failure_detail(exc: Exception, what: str) -> str:
    """The message a failed task carries; logs it (with the traceback when it was unexpected)."""
    if isinstance(exc, MLBackendError):
        logger.warning("%s: %s", what, exc.detail)
        return exc.detail
    logger.error("%s: %s: %s", what, type(exc).__name__, exc, exc_info=exc)
    return f"{type(exc).__name__}: {exc}"


def call_isolated(run: Callable[[Item], Any], item: Item, what: str) -> Union[Any, TaskFailed]:
    """`run(item)`, or `TaskFailed` when it fails on its own; request-level errors propagate."""
    try:
        return run(item)
    except Exception as exc:
        if fails_request(exc):
            raise
        return TaskFailed(failure_detail(exc, what))


def run_isolated(run_batch: Callable[[List[Item]], Sequence[Any]], items: Sequence[Item],
                 what: Callable[[Item], str]) -> List[Union[Any, TaskFailed]]:
    """One result per item from `run_batch(items)` (which returns one result per item, in order).

    If the batch fails with a task-level error, or answers a different number of results, each
    item is run alone, so only the items that fail by themselves get `TaskFailed`; `what(item)` names an item in logs and messages. An item
    whose single run returns nothing gets `TaskFailed` too."""
    items = list(items)
    if len(items) > 1:
        try:
            results = list(run_batch(items))
        except Exception as exc:
            if fails_request(exc):
                raise
            logger.warning("A batch of %d failed (%s: %s); running them one by one", len(items), type(exc).__name__, exc)
        else:
            if len(results) == len(items):
                return results
            # which result belongs to which item is unknown: none is trusted
            logger.warning("A batch of %d gave %d results; running them one by one", len(items), len(results))
    return [call_isolated(lambda one: _single(run_batch([one])), item, what(item)) for item in items]


def _single(results: Sequence[Any]) -> Any:
    if not results:
        raise MLBackendError("the model returned no prediction for this task")
    return results[0]

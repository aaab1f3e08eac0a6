"""The media of one request's tasks: fetched and decoded batch by batch, several files at a time.

Each URL is resolved to a local file (downloaded if need be) once per request, and each image
decoded at most once while the batch of tasks naming it is being predicted. Decoded images are
what costs memory (an 8900x8900 PNG is 240 MB), so only one batch's are held: tasks sharing a
file share one array, and an image the next batch names again is kept rather than decoded again;
the last batch's are released when the request is done with its media (`with TaskMedia(...)`).
Failures are kept for the whole request (they are small), so a broken file is tried once, and
reported to each task that names it when it asks for it.

A batch's files are fetched, then decoded, side by side: the request's own thread works through
them, and the process's media threads that are free help (downloads wait on the network; OpenCV
decodes without holding Python's lock, so a request that comes alone decodes on every core before
its model runs). A request never waits for media threads that other requests' slow downloads hold.
"""

import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from control_models.context import ControlContext
from label_studio_ml.exceptions import MLBackendError, TaskDataError
from utils.images import load_image
from utils.lanes import usable_cores

_loader: Optional[ThreadPoolExecutor] = None
_loader_lock = threading.Lock()


def media_threads() -> ThreadPoolExecutor:
    """The process's media threads, started on first use: a few more than the cores, since a
    download mostly waits."""
    global _loader
    with _loader_lock:
        if _loader is None:
            _loader = ThreadPoolExecutor(max_workers=min(32, usable_cores() + 4), thread_name_prefix="media")
        return _loader


def _forget_media_threads() -> None:
    """In a forked child (a gunicorn worker, an RQ work horse): the parent's threads are not there."""
    global _loader, _loader_lock
    _loader, _loader_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):  # not on Windows, where nothing forks
    os.register_at_fork(after_in_child=_forget_media_threads)


class TaskMedia:
    def __init__(self, context: ControlContext, tasks: List[dict]):
        self.context = context
        self.tasks = tasks
        self._paths: Dict[str, Union[str, MLBackendError]] = {}  # URL -> local path
        self._images: Dict[str, Union[np.ndarray, MLBackendError]] = {}  # local path -> decoded image

    def __enter__(self) -> "TaskMedia":
        return self

    def __exit__(self, *exc) -> None:
        """Release everything now: a cached error's traceback refers back to these caches, so
        without this the last batch's images would wait for Python's cycle collector."""
        self._paths.clear()
        self._images.clear()

    def url(self, index: int, key: str) -> str:
        data = self.tasks[index]["data"]
        if key not in data:
            raise TaskDataError(f"task data has no '{key}' (keys: {', '.join(map(str, data)) or 'none'})")
        value = data[key]
        if not isinstance(value, str):
            raise TaskDataError(f"task data '{key}' must be a URL or path string, not {type(value).__name__}")
        return value

    def local_path(self, index: int, key: str) -> str:
        url = self.url(index, key)
        return _cached(self._paths, url, lambda: self.context.local_path(url, task_id=self.tasks[index].get("id")))

    def image(self, index: int, key: str) -> np.ndarray:
        path = self.local_path(index, key)
        return _cached(self._images, path, lambda: load_image(path, self.context.yolo.max_image_pixels))

    def load_batch(self, indices: Sequence[int], keys: Iterable[str]) -> None:
        """Make the images that tasks `indices` show under `keys` (the next batch) the ones held:
        their files fetched, then the other images released, then theirs decoded, each step
        several files at a time."""
        keys = list(keys)
        shown = [(index, key) for index in indices for key in keys]
        _side_by_side(lambda pair: self.local_path(*pair), _one_each(shown, self._url_or_none))
        wanted = {self._path_or_none(*pair) for pair in shown} - {None}
        for path in [p for p, image in self._images.items() if p not in wanted and isinstance(image, np.ndarray)]:
            del self._images[path]
        _side_by_side(lambda pair: self.image(*pair), _one_each(shown, self._path_or_none))

    def _url_or_none(self, index: int, key: str) -> Optional[str]:
        try:
            return self.url(index, key)
        except MLBackendError:
            return None

    def _path_or_none(self, index: int, key: str) -> Optional[str]:
        try:
            return self.local_path(index, key)
        except Exception:  # noqa: BLE001 - reported to the task when it asks for its image
            return None


def _one_each(pairs: List[Tuple[int, str]], name: Callable[[int, str], Optional[str]]) -> List[Tuple[int, str]]:
    """One (task, key) pair per distinct `name` (URL or file) of `pairs`, none for those without."""
    first: Dict[str, Tuple[int, str]] = {}
    for pair in pairs:
        named = name(*pair)
        if named is not None:
            first.setdefault(named, pair)
    return list(first.values())


def _side_by_side(load: Callable[[Tuple[int, str]], object], pairs: List[Tuple[int, str]]) -> None:
    """`load(pair)` for each of `pairs`: the calling thread takes one pair after another, and free
    media threads take pairs too, so the call ends when its own thread has got through them, or
    sooner with help, never later waiting for a busy media thread. What fails is left for the task
    that asks for it again: an `MLBackendError` is cached by then (`_cached`), anything else is
    raised again then, in that task's own isolation (model.py)."""
    remaining = iter(pairs)
    taking = threading.Lock()

    def take_until_none_left() -> None:
        while True:
            with taking:
                pair = next(remaining, None)
            if pair is None:
                return
            try:
                load(pair)
            except Exception:  # noqa: BLE001 - see above
                pass

    helpers = [media_threads().submit(take_until_none_left) for _ in pairs[1:]]
    take_until_none_left()
    # One that has not started has nothing left to take (cancelled); those that started finish the pair they took.
    wait([helper for helper in helpers if not helper.cancel()])


def _cached(cache: dict, key: str, make: Callable):
    """`cache[key]`, made once; an `MLBackendError` from `make` is cached too and raised each time."""
    if key not in cache:
        try:
            cache[key] = make()
        except MLBackendError as exc:
            cache[key] = exc
    if isinstance(cache[key], MLBackendError):
        raise cache[key]
    return cache[key]

"""The media of one request's tasks: fetched and decoded batch by batch, several files at a time.

Each URL is resolved to a local file (downloaded if need be) once per request, and each image
decoded at most once while the batch of tasks naming it is being predicted. Decoded images are
what costs memory (an 8900x8900 PNG is 240 MB), so only one batch's are held: tasks sharing a
file share one array, and an image the next batch names again is kept rather than decoded again.
Failures are kept for the whole request (they are small), so a broken file is tried once, and
reported to each task that names it when it asks for it.

A batch's files are fetched and decoded side by side on the process's media threads: downloads
wait on the network, and decoding (OpenCV, without the GIL) uses the cores the model is not yet
using; a batch of one file is loaded on the request's own thread.
"""

import threading
from concurrent.futures import ThreadPoolExecutor
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


class TaskMedia:
    def __init__(self, context: ControlContext, tasks: List[dict]):
        self.context = context
        self.tasks = tasks
        self._paths: Dict[str, Union[str, MLBackendError]] = {}  # URL -> local path
        self._images: Dict[str, Union[np.ndarray, MLBackendError]] = {}  # local path -> decoded image

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
        except MLBackendError:
            return None  # reported when the task's image is asked for


def _one_each(pairs: List[Tuple[int, str]], name: Callable[[int, str], Optional[str]]) -> List[Tuple[int, str]]:
    """One (task, key) pair per distinct `name` (URL or file) of `pairs`, none for those without."""
    first: Dict[str, Tuple[int, str]] = {}
    for pair in pairs:
        named = name(*pair)
        if named is not None:
            first.setdefault(named, pair)
    return list(first.values())


def _side_by_side(load: Callable[[Tuple[int, str]], object], pairs: List[Tuple[int, str]]) -> None:
    """`load(pair)` for each of `pairs`, on the media threads when there are several. What fails is
    left for the task that asks for it again: an `MLBackendError` is cached by then (`_cached`),
    anything else is raised again then, in that task's own isolation."""
    def quietly(pair):
        try:
            load(pair)
        except Exception:  # noqa: BLE001 - see above
            pass

    if len(pairs) < 2:
        for pair in pairs:
            quietly(pair)
    else:
        list(media_threads().map(quietly, pairs))


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

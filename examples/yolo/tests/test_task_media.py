"""A request's media (utils/task_media.py): a batch's files fetched and decoded side by side, each
file once, each failure reported to the tasks that name the file (test_request_memory.py: one
batch of images held at a time, through /predict)."""

import threading
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from label_studio_ml.exceptions import MLBackendError, TaskDataError
from utils.task_media import TaskMedia


class MediaSource:
    """`local_path` of a request's context: URL `u/<name>` is the file `<name>` of `directory`;
    names starting with `missing` fail as a download would. Records what was fetched, and can
    require `together` fetches to be under way at once (a barrier: fetched one at a time, they fail)."""

    def __init__(self, directory, together: int = 0):
        self.directory = directory
        self.fetched = []
        self._barrier = threading.Barrier(together, timeout=10) if together else None
        self._lock = threading.Lock()

    def __call__(self, url: str, task_id=None) -> str:
        with self._lock:
            self.fetched.append(url)
        if self._barrier is not None:
            self._barrier.wait()  # BrokenBarrierError unless `together` fetches wait here at once
        name = url.split("/", 1)[1]
        if name.startswith("missing"):
            raise MLBackendError(f"{name}: 404 from Label Studio")
        return str(self.directory / name)


def context(source) -> SimpleNamespace:
    return SimpleNamespace(local_path=source, yolo=SimpleNamespace(max_image_pixels=10 ** 8))


@pytest.fixture
def images(tmp_path):
    """Three small PNGs of different colours: a.png, b.png, c.png; and broken.png."""
    for value, name in ((40, "a"), (120, "b"), (200, "c")):
        cv2.imwrite(str(tmp_path / f"{name}.png"), np.full((24, 32, 3), value, np.uint8))
    (tmp_path / "broken.png").write_bytes(b"not an image")
    return tmp_path


def tasks_showing(*names):
    return [{"id": i, "data": {"image": f"u/{name}"}} for i, name in enumerate(names)]


def test_the_files_of_a_batch_are_fetched_side_by_side_and_decoded(images):
    source = MediaSource(images, together=3)
    media = TaskMedia(context(source), tasks_showing("a.png", "b.png", "c.png"))
    media.load_batch(range(3), ["image"])
    assert sorted(source.fetched) == ["u/a.png", "u/b.png", "u/c.png"]  # each once, all three at once
    for index, value in enumerate((40, 120, 200)):
        assert media.image(index, "image").shape == (24, 32, 3)
        assert int(media.image(index, "image")[0, 0, 0]) == value


def test_each_failure_is_its_tasks_own_and_the_rest_of_the_batch_loads(images):
    source = MediaSource(images)
    tasks = tasks_showing("a.png", "missing.png", "broken.png", "a.png", "b.png")
    tasks.append({"id": 5, "data": {"video": "u/a.png"}})
    media = TaskMedia(context(source), tasks)
    media.load_batch(range(6), ["image"])
    assert sorted(source.fetched) == ["u/a.png", "u/b.png", "u/broken.png", "u/missing.png"]  # a.png once
    assert media.image(0, "image") is media.image(3, "image")  # one array for the tasks sharing a file
    assert int(media.image(4, "image")[0, 0, 0]) == 120
    with pytest.raises(MLBackendError, match="404"):
        media.image(1, "image")
    with pytest.raises(MLBackendError, match="Cannot decode image broken.png"):
        media.image(2, "image")
    with pytest.raises(TaskDataError, match="no 'image'"):
        media.image(5, "image")
    assert sorted(source.fetched) == ["u/a.png", "u/b.png", "u/broken.png", "u/missing.png"]  # failures tried once


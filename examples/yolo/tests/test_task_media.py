"""A request's media (utils/task_media.py): a batch's files fetched and decoded side by side, each
file once, each failure reported to the tasks that name the file (test_request_memory.py: one
batch of images held at a time, through /predict)."""

import os
import signal
import threading
import time
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from label_studio_ml.exceptions import MLBackendError, TaskDataError
from utils import task_media
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
        if name.startswith("crash"):
            raise RuntimeError("disk full")
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
    tasks += tasks_showing("crash.png")  # an unexpected error: raised again when its task asks
    media = TaskMedia(context(source), tasks)
    media.load_batch(range(7), ["image"])
    assert sorted(set(source.fetched)) == ["u/a.png", "u/b.png", "u/broken.png", "u/crash.png", "u/missing.png"]
    assert source.fetched.count("u/a.png") == 1 and source.fetched.count("u/missing.png") == 1
    assert media.image(0, "image") is media.image(3, "image")  # one array for the tasks sharing a file
    assert int(media.image(4, "image")[0, 0, 0]) == 120
    with pytest.raises(MLBackendError, match="404"):
        media.image(1, "image")
    with pytest.raises(MLBackendError, match="Cannot decode image broken.png"):
        media.image(2, "image")
    with pytest.raises(TaskDataError, match="no 'image'"):
        media.image(5, "image")
    with pytest.raises(RuntimeError, match="disk full"):
        media.image(6, "image")
    assert source.fetched.count("u/missing.png") == 1 and source.fetched.count("u/broken.png") == 1  # tried once


def test_a_batch_loads_on_its_own_thread_while_every_media_thread_is_held_by_others(images):
    """Other requests' downloads that hang hold all the media threads: this batch's files are
    loaded by the request's own thread all the same, not after theirs."""
    pool = task_media.media_threads()
    release = threading.Event()
    holding = [pool.submit(release.wait, 30) for _ in range(pool._max_workers)]
    try:
        media = TaskMedia(context(MediaSource(images)), tasks_showing("a.png", "b.png", "c.png"))
        loader = threading.Thread(target=media.load_batch, args=(range(3), ["image"]))
        loader.start()
        loader.join(20)
        assert not loader.is_alive(), "the batch waited for the busy media threads"
        assert [int(media.image(i, "image")[0, 0, 0]) for i in range(3)] == [40, 120, 200]
    finally:
        release.set()
    assert all(future.result() for future in holding)


def test_a_forked_child_loads_with_media_threads_of_its_own(images):
    """A gunicorn worker or RQ work horse forked from a process that had loaded media: the
    parent's media threads are not in the child."""
    TaskMedia(context(MediaSource(images)), tasks_showing("a.png", "b.png")).load_batch(range(2), ["image"])
    pid = os.fork()
    if pid == 0:
        try:
            media = TaskMedia(context(MediaSource(images, together=2)), tasks_showing("b.png", "c.png"))
            media.load_batch(range(2), ["image"])  # the barrier: both files at once, so a media thread took one
            os._exit(0 if int(media.image(1, "image")[0, 0, 0]) == 200 else 1)
        except BaseException:
            os._exit(1)
    deadline = time.monotonic() + 20
    while (finished := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if finished[0] == 0:  # hung waiting for threads the fork did not copy
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert finished[0] == pid and os.waitstatus_to_exitcode(finished[1]) == 0

"""Files several threads and processes (gunicorn workers, RQ workers) write: atomically, one
writer at a time."""

import fcntl
import os
import tempfile
from contextlib import contextmanager


def atomic_write(path: str, write) -> None:
    """`write(file object)` into a temp file next to `path`, then rename it over `path`: readers
    (other threads, processes) see the old file or the new one, never half of one."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


@contextmanager
def exclusive(path: str):
    """Hold an exclusive lock on `path + ".lock"` (waiting for it): one writer of `path` at a time
    among all threads and processes (gunicorn workers, RQ workers) on this machine. The lock file
    stays: removing it would let a waiting process lock a file nobody else sees."""
    lock_path = path + ".lock"
    os.makedirs(os.path.dirname(os.path.abspath(lock_path)), exist_ok=True)
    with open(lock_path, "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


@contextmanager
def exclusive_if_free(path: str):
    """`exclusive` without waiting: yields True while holding the lock on `path + ".lock"`, or
    False at once when another thread or process holds it (for work that must not run twice at
    the same time, such as a training, rather than wait its turn)."""
    lock_path = path + ".lock"
    os.makedirs(os.path.dirname(os.path.abspath(lock_path)), exist_ok=True)
    with open(lock_path, "a") as lock_file:  # closing it releases the lock
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True

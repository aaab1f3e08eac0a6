"""Files: written atomically and one writer at a time (threads, gunicorn and RQ workers share
them), named safely, and known by their content."""

import fcntl
import hashlib
import os
import re
import tempfile
import threading
from contextlib import contextmanager
from typing import Dict, Optional, Tuple

_digests: Dict[Tuple[str, int, int], str] = {}
_digests_lock = threading.Lock()


def content_digest(path: str) -> str:
    """Hash of a file's content (BLAKE2b), remembered per (path, size, mtime) so a big file is
    hashed once per process. Content, not path: a re-downloaded video keeps its cached features,
    replaced weights get new exports."""
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    with _digests_lock:
        known = _digests.get(key)
    if known is not None:
        return known
    digest = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    value = digest.hexdigest()
    with _digests_lock:
        _digests[key] = value
    return value


def safe_name(text: str, max_length: Optional[int] = None) -> str:
    """`text` as a file name part: letters, digits, `_.-` only (`_` for the rest), never empty."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("._") or "_"
    return name[:max_length] if max_length else name


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

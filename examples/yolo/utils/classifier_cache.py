"""Process-wide cache of loaded TimelineLabels classifiers, shaped like the model registry
(utils/inference.py): a guard lock for the table, one lock per file so that concurrent first
requests read a file once while other classifiers stay usable.

The file is the classifier's one home, its training count included (`TimelineClassifier.trainings`):
every gunicorn worker, RQ worker and replica that shares MODEL_ROOT reads the same file, which a
training replaces whole (atomically, under a file lock), so weights and count never disagree. A
cached classifier is kept only while its file is the version it was read from; a file that was
replaced is read again, one that was removed is released.
"""

import os
import threading
from typing import Dict, Optional, Tuple

from utils.timeline_classifier import TimelineClassifier

Stamp = Tuple[int, int, int]


def file_stamp(path: str) -> Optional[Stamp]:
    """Identity of the file's current version (a save replaces the file: new inode); None when
    there is no file."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


class ClassifierCache:
    def __init__(self):
        self._loaded: Dict[str, Tuple[Stamp, TimelineClassifier]] = {}
        self._locks: Dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, path: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(path, threading.Lock())

    def get(self, path: str) -> Optional[TimelineClassifier]:
        """The classifier saved at `path` (by any process), read again only when the file
        changed; None when there is none. Callers must not train it (see `put`)."""
        with self._lock(path):
            stamp = file_stamp(path)
            cached = self._loaded.get(path)
            if stamp is None:
                self._loaded.pop(path, None)
                return None
            if cached is None or cached[0] != stamp:
                cached = (stamp, TimelineClassifier.load(path))
                self._loaded[path] = cached
            return cached[1]

    def put(self, path: str, classifier: TimelineClassifier) -> None:
        """`classifier`, just saved at `path` by this process, serves from now on: a training
        trains a private copy and puts it here, so that a prediction under way keeps its own."""
        with self._lock(path):
            stamp = file_stamp(path)
            if stamp is not None:
                self._loaded[path] = (stamp, classifier)


classifiers = ClassifierCache()

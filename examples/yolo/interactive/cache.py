"""What the interactive engines keep between clicks: an annotator clicks several times on one
image, so its decoded pixels, SAM embedding or YOLO-seg instances are computed once and reused."""

import hashlib
import os
import threading
from collections import OrderedDict
from typing import Callable, Hashable

import numpy as np

from utils.images import load_image


class ImageCache:
    """The values of the images used last, shared by the threads of the process; how many are
    kept is the caller's setting, passed with each call.

    A value is computed outside the lock; model work runs on the one inference thread anyway,
    so two threads never compute the same embedding at once."""

    def __init__(self):
        self._items: "OrderedDict[Hashable, object]" = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], object], capacity: int):
        """The value of `key`, computed by `compute()` unless kept; `capacity` values are kept."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = compute()
        with self._lock:
            self._items[key] = value
            while len(self._items) > max(1, capacity):
                self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


decoded_images = ImageCache()


def load_image_once(path: str, max_pixels: int, capacity: int) -> np.ndarray:
    """The decoded image at `path` (`utils.images.load_image`), decoded again only when the file
    changes (its size or modification time); `capacity` (`INTERACTIVE_CACHE_IMAGES`) images are
    kept. Callers must not modify it."""
    stat = os.stat(path)
    return decoded_images.get((path, stat.st_size, stat.st_mtime_ns), lambda: load_image(path, max_pixels), capacity)


def image_digest(image: np.ndarray) -> str:
    """Content key of a decoded image: the same picture under another URL or task shares its entries."""
    data = np.ascontiguousarray(image)
    digest = hashlib.blake2b(memoryview(data).cast("B"), digest_size=16)
    digest.update(repr((data.shape, data.dtype.str)).encode())
    return digest.hexdigest()

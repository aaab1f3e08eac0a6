"""Bounded inference: at most N predictions run at once, a bounded queue waits, the rest get 503.

Without a bound, a Label Studio "Retrieve predictions" over hundreds of tasks plus annotators'
interactive calls pile up threads until every request times out. With it, excess requests get
a fast 503 + `Retry-After`, and `/metrics` shows the queue.
"""

import threading
from contextlib import contextmanager

from .exceptions import Overloaded


class InferenceGate:
    def __init__(self, max_running: int, max_waiting: int, wait_timeout: float):
        self.max_running = max(1, max_running)
        self.max_waiting = max(0, max_waiting)
        self.wait_timeout = wait_timeout
        self._slots = threading.Semaphore(self.max_running)
        self._lock = threading.Lock()
        self.running = 0
        self.waiting = 0
        self.rejected = 0

    @contextmanager
    def slot(self):
        with self._lock:
            if self.running >= self.max_running and self.waiting >= self.max_waiting:
                self.rejected += 1
                raise Overloaded(
                    f"Busy: {self.running} predictions running and {self.waiting} queued; retry later"
                )
            self.waiting += 1
        acquired = self._slots.acquire(timeout=self.wait_timeout)
        with self._lock:
            self.waiting -= 1
            if not acquired:
                self.rejected += 1
            else:
                self.running += 1
        if not acquired:
            raise Overloaded(f"Busy: no prediction slot freed within {self.wait_timeout:.0f} s; retry later")
        try:
            yield
        finally:
            with self._lock:
                self.running -= 1
            self._slots.release()

    def figures(self) -> dict:
        with self._lock:
            return {
                "predictions_running": self.running,
                "predictions_queued": self.waiting,
                "predictions_rejected_total": self.rejected,
                "predictions_max_running": self.max_running,
                "predictions_max_queued": self.max_waiting,
            }

"""Deadlines for blocking reads: one daemon thread runs an action (shutting a socket down) when a
deadline passes, unless the deadline was cancelled first.

Every request body and every media download has a deadline; a `threading.Timer` each would start
a thread per request. `WATCHDOG` serves them all from one thread, started on first use and woken
only by a deadline due sooner than the one it waits for: scheduling one more request body's
deadline, later than those before it, costs no thread wake-up.
"""

import heapq
import itertools
import logging
import os
import threading
import time
from typing import Callable, List, Optional, Tuple

logger = logging.getLogger(__name__)


class Deadline:
    """One scheduled action; `fired` tells whether it ran (final once `Watchdog.cancel` returned)."""

    __slots__ = ("action", "cancelled", "fired")

    def __init__(self, action: Callable[[], None]):
        self.action = action
        self.cancelled = False
        self.fired = False


class Watchdog:
    # Cancelled deadlines stay in the heap until due; past this many, and half the heap, they are dropped.
    COMPACT_AFTER = 256

    def __init__(self, name: str):
        self._name = name
        self._order = itertools.count()  # ties never compare two Deadline objects
        self._start_afresh()
        # a forked child (a gunicorn worker) has no watchdog thread, and maybe a lock held at the fork
        if hasattr(os, "register_at_fork"):  # not on Windows, where nothing forks
            os.register_at_fork(after_in_child=self._start_afresh)

    def _start_afresh(self) -> None:
        self._condition = threading.Condition()
        self._heap: List[Tuple[float, int, Deadline]] = []  # (due, order, deadline), soonest first
        self._cancelled = 0  # cancelled deadlines still in the heap
        self._thread: Optional[threading.Thread] = None  # started on first use

    def schedule(self, seconds: float, action: Callable[[], None]) -> Deadline:
        """Run `action()` (quick, non-blocking) in `seconds`, unless `cancel` is called first."""
        deadline = Deadline(action)
        with self._condition:
            heapq.heappush(self._heap, (time.monotonic() + seconds, next(self._order), deadline))
            if self._thread is None:
                thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                thread.start()
                self._thread = thread
            elif self._heap[0][2] is deadline:  # due before what the thread waits for: wake it
                self._condition.notify()
        return deadline

    def cancel(self, deadline: Deadline) -> bool:
        """True when `deadline` had not fired: then its action never runs. False when it ran."""
        with self._condition:  # actions run under this lock: none is half done here
            if deadline.fired or deadline.cancelled:
                return not deadline.fired
            deadline.cancelled = True
            self._cancelled += 1
            if self._cancelled > self.COMPACT_AFTER and 2 * self._cancelled > len(self._heap):
                self._heap = [entry for entry in self._heap if not entry[2].cancelled]
                heapq.heapify(self._heap)
                self._cancelled = 0
            return True

    def _run(self) -> None:
        with self._condition:
            while True:
                while self._heap and self._heap[0][0] <= time.monotonic():
                    _, _, deadline = heapq.heappop(self._heap)
                    if deadline.cancelled:
                        self._cancelled -= 1
                        continue
                    deadline.fired = True
                    try:
                        deadline.action()
                    except Exception:  # the thread serves every other deadline: it must not die
                        logger.exception("A deadline action failed")
                self._condition.wait(self._heap[0][0] - time.monotonic() if self._heap else None)


WATCHDOG = Watchdog("deadline-watchdog")

"""Bounded, fair inference: at most N predictions run at once, a bounded queue waits its turn in
arrival order, the rest get 503.

Without a bound, a Label Studio "Retrieve predictions" over hundreds of tasks plus annotators'
interactive calls pile up threads until every request times out. With it, excess requests get
a fast 503 + `Retry-After`, and `/metrics` shows the queue.

`/predict` and `/train` are admitted before their body is read, and the admitted requests
(reading, waiting or running) never exceed `max_running + max_waiting`: sized below the server's
thread count (`gate_from_settings`), that leaves threads for `/health` and `/setup` however many
predictions run or wait, and however many of those clients send their body slowly (each body has
REQUEST_BODY_TIMEOUT). Not covered: clients stalled in their headers (gunicorn reads headers with
no time limit) or many slow non-admitted requests (`/setup`, `/webhook`) each hold a thread until
their own deadline; put a reverse proxy in front of a backend exposed to untrusted clients.

Fairness: slots are handed over in arrival order (a finishing request cannot barge ahead of one
that waits), and a long request calls `take_turn()` between chunks of tasks, which lets the
longest-waiting request run first; the rest of the long request then waits its turn.
"""

import logging
import threading
from collections import deque
from contextlib import contextmanager
from typing import Optional

from .exceptions import Overloaded
from .settings import Settings

logger = logging.getLogger(__name__)


class _Ticket:
    """One admitted request: `granted` is set when a running slot is handed to it."""

    def __init__(self):
        self.granted = threading.Event()
        self.running = False


class InferenceGate:
    def __init__(self, max_running: int, max_waiting: int, wait_timeout: float):
        self.max_running = max(1, max_running)
        self.max_waiting = max(0, max_waiting)
        self.wait_timeout = wait_timeout
        self._lock = threading.Lock()
        self._queue = deque()  # tickets waiting for a slot, oldest first
        self._local = threading.local()  # the ticket of the request this thread serves
        self.running = 0
        self.admitted = 0
        self.rejected = 0

    @property
    def waiting(self) -> int:
        return len(self._queue)

    # ----- admission: one per request, before its body is read ------------------------------------
    def admit(self) -> _Ticket:
        """Admit the current request (503 when `max_running + max_waiting` are already admitted)."""
        with self._lock:
            if self.admitted >= self.max_running + self.max_waiting:
                self.rejected += 1
                raise Overloaded(f"Busy: {self.running} predictions running and {len(self._queue)} queued; retry later")
            self.admitted += 1
        ticket = _Ticket()
        self._local.ticket = ticket
        return ticket

    def leave(self, ticket: _Ticket) -> None:
        """The admitted request is over (whether or not it ran)."""
        with self._lock:
            self.admitted -= 1
        if getattr(self._local, "ticket", None) is ticket:
            self._local.ticket = None

    # ----- running slots ---------------------------------------------------------------------------
    @contextmanager
    def slot(self):
        """Hold a running slot for the block: the current request's admission ticket, or one of its
        own when the request was not admitted (e.g. called outside the HTTP layer)."""
        ticket: Optional[_Ticket] = getattr(self._local, "ticket", None)
        own = ticket is None
        if own:
            ticket = self.admit()
        try:
            self._acquire(ticket)
            try:
                yield
            finally:
                self._release(ticket)
        finally:
            if own:
                self.leave(ticket)

    def take_turn(self) -> None:
        """Called by a request holding a slot between chunks of its work: when others wait, hand the
        slot to the longest-waiting one and queue behind the others (no timeout: it was admitted)."""
        ticket = getattr(self._local, "ticket", None)
        if ticket is None or not ticket.running:
            return
        with self._lock:
            if not self._queue:
                return
            ticket.running = False
            ticket.granted.clear()
            self._hand_over(self._queue.popleft())
            self._queue.append(ticket)
        ticket.granted.wait()
        ticket.running = True

    def _acquire(self, ticket: _Ticket) -> None:
        with self._lock:
            if self.running < self.max_running and not self._queue:
                self.running += 1
                ticket.running = True
                return
            ticket.granted.clear()
            self._queue.append(ticket)
        if not ticket.granted.wait(self.wait_timeout):
            with self._lock:
                if ticket in self._queue:  # else the slot was handed over just as the wait ended
                    self._queue.remove(ticket)
                    self.rejected += 1
                    raise Overloaded(f"Busy: no prediction slot freed within {self.wait_timeout:.0f} s; retry later")
        ticket.running = True

    def _release(self, ticket: _Ticket) -> None:
        with self._lock:
            ticket.running = False
            if self._queue:
                self._hand_over(self._queue.popleft())  # the slot passes on: `running` stays
            else:
                self.running -= 1

    @staticmethod
    def _hand_over(ticket: _Ticket) -> None:
        ticket.granted.set()

    def figures(self) -> dict:
        with self._lock:
            return {
                "predictions_running": self.running,
                "predictions_queued": len(self._queue),
                "predictions_rejected_total": self.rejected,
                "predictions_max_running": self.max_running,
                "predictions_max_queued": self.max_waiting,
                "requests_admitted": self.admitted,
            }


# Threads a gunicorn_config.py server runs at the least (THREADS may ask for more).
MIN_SERVER_THREADS = 8


def reserved_threads(settings: Settings) -> int:
    return max(1, settings.reserved_threads)


def server_threads(settings: Settings) -> int:
    """Threads a server process needs so that every request the gate admits (`PREDICT_CONCURRENCY`
    running plus `PREDICT_QUEUE_SIZE` waiting) still leaves `RESERVED_THREADS` for `/health` and
    `/setup`: at least that, or `THREADS` (default 8) when larger (gunicorn_config.py serves with it)."""
    needed = settings.predict_concurrency + settings.predict_queue_size + reserved_threads(settings)
    return max(settings.threads or MIN_SERVER_THREADS, needed)


def gate_from_settings(settings: Settings) -> InferenceGate:
    """The gate sized by `PREDICT_CONCURRENCY` (4), `PREDICT_QUEUE_SIZE` (64) and
    `PREDICT_QUEUE_TIMEOUT` (90 s), capped so that admitted requests leave `RESERVED_THREADS` (2)
    of the server's threads (`settings.threads`, which gunicorn_config.py gives each worker) free
    for `/health` and `/setup` (no cap when that is unknown, e.g. under Flask's development server,
    which starts a thread per connection)."""
    running = settings.predict_concurrency
    waiting = settings.predict_queue_size
    threads = settings.threads
    if threads > 0:
        held = max(1, threads - reserved_threads(settings))
        if running + waiting > held:
            logger.warning("THREADS=%d: at most %d requests predict or wait at once (fewer than PREDICT_CONCURRENCY "
                           "+ PREDICT_QUEUE_SIZE), so that %d threads stay free for /health and /setup",
                           threads, held, threads - held)
        running = min(running, held)
        waiting = min(waiting, held - running)
    return InferenceGate(max_running=running, max_waiting=waiting, wait_timeout=settings.predict_queue_timeout)

"""The one thread that enforces the deadlines of request bodies and media downloads."""

import os
import signal
import socket
import threading
import time

from label_studio_ml.watchdog import Watchdog


def test_a_deadline_that_passes_stops_a_blocked_read():
    watchdog = Watchdog("test-watchdog")
    reader, writer = socket.socketpair()
    try:
        deadline = watchdog.schedule(0.2, lambda: reader.shutdown(socket.SHUT_RD))
        started = time.monotonic()
        assert reader.recv(10) == b""  # blocked until the watchdog shut the socket down
        assert 0.1 < time.monotonic() - started < 5
        assert deadline.fired and not watchdog.cancel(deadline)
    finally:
        reader.close()
        writer.close()


def test_a_cancelled_deadline_never_fires():
    watchdog = Watchdog("test-watchdog")
    ran = []
    deadline = watchdog.schedule(0.1, lambda: ran.append("late"))
    assert watchdog.cancel(deadline) and watchdog.cancel(deadline)
    watchdog.schedule(0.3, lambda: ran.append("on time"))
    time.sleep(0.6)
    assert ran == ["on time"] and not deadline.fired


def test_deadlines_fire_in_time_order_and_a_failing_action_stops_none_of_the_others():
    watchdog = Watchdog("test-watchdog")
    ran, done = [], threading.Event()

    def fail():
        raise RuntimeError("action failed")

    watchdog.schedule(0.4, lambda: (ran.append("last"), done.set()))
    watchdog.schedule(0.1, fail)
    watchdog.schedule(0.2, lambda: ran.append("first"))
    assert done.wait(5)
    assert ran == ["first", "last"]


def test_a_sooner_deadline_wakes_the_thread_waiting_for_a_later_one():
    """The thread sleeps until its soonest deadline; one scheduled sooner than that must wake it
    (later ones need not)."""
    watchdog = Watchdog("test-watchdog")
    watchdog.schedule(3600, lambda: None)
    time.sleep(0.1)  # the thread now waits for the hour to pass
    notified = []
    notify = watchdog._condition.notify
    watchdog._condition.notify = lambda *args: (notified.append(args), notify(*args))
    watchdog.schedule(7200, lambda: None)
    assert notified == [], "a later deadline woke the thread for nothing"
    fired = threading.Event()
    started = time.monotonic()
    watchdog.schedule(0.1, fired.set)
    assert len(notified) == 1
    assert fired.wait(5) and time.monotonic() - started < 2


def test_cancelled_deadlines_do_not_pile_up():
    watchdog = Watchdog("test-watchdog")
    for _ in range(10 * Watchdog.COMPACT_AFTER):
        watchdog.cancel(watchdog.schedule(3600, lambda: None))
    assert len(watchdog._heap) <= 2 * Watchdog.COMPACT_AFTER


def test_a_forked_child_runs_a_watchdog_thread_of_its_own():
    """A gunicorn worker forked from a master whose watchdog had started (threads do not survive a fork)."""
    watchdog = Watchdog("test-watchdog")
    watchdog.schedule(0, lambda: None)  # the parent's thread runs
    pid = os.fork()
    if pid == 0:
        fired = threading.Event()
        watchdog.schedule(0.05, fired.set)
        os._exit(0 if fired.wait(5) else 1)
    deadline = time.monotonic() + 10
    while (finished := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if finished[0] == 0:  # deadlocked on a lock held at the fork
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert finished[0] == pid and os.waitstatus_to_exitcode(finished[1]) == 0

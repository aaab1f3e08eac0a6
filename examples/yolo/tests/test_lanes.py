"""A device's inference threads: one call alone runs wide, calls that queue up share the cores in
lanes, a batch that comes alone takes every lane, and wide and lanes never run at once."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from utils.lanes import WIDE, DeviceLanes


def wait_for(condition, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


class Recorder:
    """Work that notes on which grant it ran and which grants ran meanwhile, and ends only once
    `gate` is open."""

    def __init__(self):
        self.lock = threading.Lock()
        self.running = {}  # name -> grant
        self.overlaps = []  # (grant, grants running when it started)
        self.gate = threading.Event()
        self.gate.set()

    def work(self, grant, name):
        with self.lock:
            self.overlaps.append((grant, sorted(self.running.values())))
            self.running[name] = grant
        self.gate.wait(30)
        time.sleep(0.01)
        with self.lock:
            del self.running[name]
        return grant, threading.current_thread().name

    def caller(self, lanes: DeviceLanes, lane_capable: bool = True):
        def call(name):
            lane_work = (lambda lane: self.work(lane, name)) if lane_capable else None
            return lanes.run(lambda: self.work(WIDE, name), lane_work)
        return call

    def assert_wide_ran_alone_and_lanes_side_by_side(self, lanes: int) -> None:
        for grant, meanwhile in self.overlaps:
            if grant == WIDE:
                assert meanwhile == [], "the wide thread runs alone"
            else:
                assert WIDE not in meanwhile and len(meanwhile) < lanes


def test_calls_one_after_another_run_wide_on_the_wide_thread():
    lanes, recorder = DeviceLanes("cpu", 2), Recorder()
    call = recorder.caller(lanes)
    for name in range(3):
        grant, thread = call(name)
        assert grant == WIDE and thread.startswith("inference-cpu_")


def test_calls_that_queue_up_take_the_lanes_side_by_side_and_never_with_the_wide_thread():
    lanes, recorder = DeviceLanes("cpu", 2), Recorder()
    call = recorder.caller(lanes)
    recorder.gate.clear()
    with ThreadPoolExecutor(6) as pool:
        first = pool.submit(call, "first")  # alone: wide
        wait_for(lambda: recorder.running)
        rest = [pool.submit(call, name) for name in range(5)]
        wait_for(lambda: len(lanes._waiting) == 5)
        assert recorder.running == {"first": WIDE}, "nothing starts beside the wide call"
        recorder.gate.set()
        grants = [future.result()[0] for future in rest]
    assert first.result()[0] == WIDE
    assert {0, 1} <= set(grants), "both lanes served the queue"
    assert grants.count(WIDE) <= 1, "only the last, alone again, may run wide"
    recorder.assert_wide_ran_alone_and_lanes_side_by_side(2)


def test_calls_that_can_only_run_wide_wait_for_the_lanes_to_empty():
    lanes, recorder = DeviceLanes("cpu", 2), Recorder()
    laned, wide_only = recorder.caller(lanes), recorder.caller(lanes, lane_capable=False)
    recorder.gate.clear()
    with ThreadPoolExecutor(4) as pool:
        blocker = pool.submit(laned, "blocker")
        wait_for(lambda: recorder.running)
        queued = [pool.submit(laned, "a"), pool.submit(laned, "b")]
        wait_for(lambda: len(lanes._waiting) == 2)
        tracking = pool.submit(wide_only, "tracking")
        wait_for(lambda: len(lanes._waiting) == 3)
        recorder.gate.set()
        assert sorted(future.result()[0] for future in queued) == [0, 1]
        assert tracking.result()[0] == WIDE
    assert blocker.result()[0] == WIDE
    recorder.assert_wide_ran_alone_and_lanes_side_by_side(2)


def test_a_call_that_comes_alone_with_a_share_for_each_lane_takes_them_all_at_once():
    lanes = DeviceLanes("cpu", 2)
    both_running = threading.Barrier(2, timeout=10)  # broken unless the two shares run at the same time

    def share(lane):
        both_running.wait()
        return lane, threading.current_thread().name

    results = lanes.run(lambda: "whole", lambda lane: "one lane", [share, share])
    assert [lane for lane, _ in results] == [0, 1]
    assert results[0][1] != results[1][1], "on two threads"


def test_calls_that_queue_up_are_not_split():
    lanes = DeviceLanes("cpu", 2)
    release_first, both_queued_running = threading.Event(), threading.Barrier(2, timeout=10)

    def first_share(lane):
        release_first.wait(30)
        return lane

    def queued_call():
        def in_a_lane(lane):
            both_queued_running.wait()  # the two queued calls run side by side, one lane each
            return lane
        return lanes.run(lambda: WIDE, in_a_lane, [lambda lane: ("split", lane)] * 2)

    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(lanes.run, lambda: WIDE, lambda lane: lane, [first_share, first_share])
        wait_for(lambda: not lanes._free_lanes)
        queued = [pool.submit(queued_call) for _ in range(2)]
        wait_for(lambda: len(lanes._waiting) == 2)
        release_first.set()
        assert first.result() == [0, 1], "alone: split over both lanes"
        assert sorted(future.result() for future in queued) == [0, 1]


def test_without_lanes_every_call_runs_wide_one_at_a_time():
    lanes, recorder = DeviceLanes("cpu", 0), Recorder()
    call = recorder.caller(lanes)
    with ThreadPoolExecutor(4) as pool:
        grants = [f.result()[0] for f in [pool.submit(call, name) for name in range(4)]]
    assert grants == [WIDE] * 4
    recorder.assert_wide_ran_alone_and_lanes_side_by_side(0)


def test_a_failing_call_frees_what_it_was_granted():
    lanes = DeviceLanes("cpu", 2)

    def fails(*_):
        raise ValueError("broken image")

    def other_share(lane):
        time.sleep(0.1)  # still running when its sibling has failed
        return lane

    with pytest.raises(ValueError, match="broken image"):
        lanes.run(fails)
    with pytest.raises(ValueError, match="broken image"):
        lanes.run(fails, fails, [fails, other_share])
    assert lanes._free_lanes and not lanes._wide_busy
    assert sorted(lanes._free_lanes) == [0, 1], "every lane back, once the share still running had ended"
    assert lanes.run(lambda: "still answers") == "still answers"

"""A device's inference threads: one call alone runs wide, calls that queue up share the cores in
lanes, and wide and lanes never run at once."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from utils.lanes import WIDE, DeviceLanes


class Recorder:
    """Work that notes where and with whom it ran, and waits for `gate` before it ends."""

    def __init__(self):
        self.lock = threading.Lock()
        self.running = set()
        self.overlaps = []  # (grant, the grants running meanwhile)
        self.gate = threading.Event()
        self.gate.set()

    def work(self, grant, name):
        with self.lock:
            self.overlaps.append((grant, frozenset(self.running)))
            self.running.add(name)
        self.gate.wait(10)
        time.sleep(0.02)
        with self.lock:
            self.running.discard(name)
        return grant, threading.current_thread().name


def calls(lanes: DeviceLanes, recorder: Recorder, names, lane_capable=True):
    def one(name):
        lane_work = (lambda lane: recorder.work(lane, name)) if lane_capable else None
        return lanes.run(lambda: recorder.work(WIDE, name), lane_work)
    return one


def test_calls_one_after_another_run_wide_on_the_wide_thread():
    lanes, recorder = DeviceLanes("cpu", 2), Recorder()
    one = calls(lanes, recorder, None)
    for name in range(3):
        grant, thread = one(name)
        assert grant == WIDE and thread.startswith("inference-cpu_")


def test_calls_that_queue_up_take_the_lanes_side_by_side_and_never_with_the_wide_thread():
    lanes, recorder = DeviceLanes("cpu", 2), Recorder()
    one = calls(lanes, recorder, None)
    recorder.gate.clear()
    with ThreadPoolExecutor(6) as pool:
        first = pool.submit(one, "first")  # alone: wide
        while not recorder.running:
            time.sleep(0.005)
        rest = [pool.submit(one, name) for name in range(5)]
        time.sleep(0.1)
        assert recorder.running == {"first"}, "nothing runs beside the wide call"
        recorder.gate.set()
        grants = [first.result()[0]] + [future.result()[0] for future in rest]
    assert grants[0] == WIDE
    assert set(grants[1:-1]) <= {0, 1} and {0, 1} <= set(grants[1:])  # both lanes served the queue
    for grant, meanwhile in recorder.overlaps:
        assert len(meanwhile) < 2, "at most two lanes at once"
        if grant == WIDE:
            assert not meanwhile, "the wide thread runs alone"


def test_calls_that_can_only_run_wide_wait_for_the_lanes_to_empty():
    lanes, recorder = DeviceLanes("cpu", 2), Recorder()
    laned, wide_only = calls(lanes, recorder, None), calls(lanes, recorder, None, lane_capable=False)
    recorder.gate.clear()
    with ThreadPoolExecutor(4) as pool:
        blocker = pool.submit(laned, "blocker")
        while not recorder.running:
            time.sleep(0.005)
        queued = [pool.submit(laned, "a"), pool.submit(laned, "b")]
        time.sleep(0.05)
        tracking = pool.submit(wide_only, "tracking")
        time.sleep(0.05)
        recorder.gate.set()
        results = [f.result()[0] for f in [blocker, *queued, tracking]]
    assert results[-1] == WIDE
    tracking_overlap = [meanwhile for grant, meanwhile in recorder.overlaps if grant == WIDE]
    assert all(not meanwhile for meanwhile in tracking_overlap)


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
    lanes, recorder = DeviceLanes("cpu", 2), Recorder()
    recorder.gate.clear()

    def split_call(name):
        shares = [lambda lane, part=part: recorder.work(lane, f"{name} {part}") for part in ("a", "b")]
        return lanes.run(lambda: recorder.work(WIDE, name), lambda lane: recorder.work(lane, name), shares)

    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(split_call, "first")
        while not recorder.running:
            time.sleep(0.005)
        queued = [pool.submit(split_call, name) for name in ("second", "third")]
        time.sleep(0.05)
        recorder.gate.set()
        assert len(first.result()) == 2  # alone: split over both lanes
        grants = [future.result()[0] for future in queued]
    assert sorted(grants) == [0, 1], "queued calls each took one lane"


def test_without_lanes_every_call_runs_wide_one_at_a_time():
    lanes, recorder = DeviceLanes("cpu", 0), Recorder()
    one = calls(lanes, recorder, None)
    with ThreadPoolExecutor(4) as pool:
        grants = [f.result()[0] for f in [pool.submit(one, name) for name in range(4)]]
    assert grants == [WIDE] * 4
    assert all(not meanwhile for _, meanwhile in recorder.overlaps)


def test_an_exception_frees_the_grant():
    lanes = DeviceLanes("cpu", 2)

    def fails():
        raise ValueError("broken image")

    with pytest.raises(ValueError, match="broken image"):
        lanes.run(fails)
    assert lanes.run(lambda: "still answers") == "still answers"

"""Who uses a device's cores now: one model call with every core, or, on a CPU under load,
several calls side by side with a share of the cores each.

One call alone runs fastest on an engine that spreads each layer over every core (ONNX Runtime's
and OpenVINO's thread pools). With several calls waiting, the same cores answer more of them per
second as separate engines of fewer threads each, running side by side: less waiting at the end
of each layer, and one call's Python pre- and post-processing overlaps another's network (README
"Performance": 4 clients and 8-task requests against the raw engine).

So a device has a wide thread (every core: today's single inference thread) and, on a CPU,
`YOLO_CPU_LANES` lane threads, and a call is granted one of them in arrival order:
- a call that finds the device idle and nobody waiting behind it runs wide, so one user's request
  is as fast as before; or, if it brings a share of its work for every lane (a batch of images),
  takes all the lanes at once;
- when calls queue up, each takes a free lane, on an engine of cores/lanes threads of its own;
- wide and lanes never run at once (the cores would be oversubscribed), and calls that can only
  run wide (PyTorch engines, work that reaches into the network, SAM) wait for the lanes to empty.
Each serving process has its own threads: with several gunicorn workers on one CPU, their engines
share the cores.
Each thread keeps its own engines and predictors (Ultralytics' are not thread-safe), and PyTorch
sees few calling threads (each gets its own OpenMP pool).
"""

import os
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Callable, List, Optional

WIDE, ALL_LANES = -1, -2  # grants of the wide thread and of every lane; a single lane's is its number


def usable_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class DeviceLanes:
    def __init__(self, device: str, lanes: int):
        self.lanes = lanes
        self.wide = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"inference-{device}")
        self._lane_threads = [ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"inference-{device}-lane{i}")
                              for i in range(lanes)]
        self._changed = threading.Condition()
        self._wide_busy = False
        self._free_lanes = list(range(lanes))
        self._waiting: deque = deque()  # callers in arrival order

    def run(self, wide_work: Callable[[], object], lane_work: Optional[Callable[[int], object]] = None,
            shares: Optional[List[Callable[[int], object]]] = None):
        """`wide_work()` on the wide thread; or, only if `lane_work` is given, `lane_work(lane)` on
        a lane's thread when the call comes while others run or wait; or, only if `shares` (one per
        lane) are given, when the call comes alone, `shares[lane](lane)` on every lane at once, and
        the list of their results. The result or the exception."""
        split = shares is not None and len(shares) == self.lanes > 0
        grant = self._acquire(lane_work is not None, split)
        try:
            if grant == WIDE:
                return self.wide.submit(wide_work).result()
            if grant == ALL_LANES:
                running = [thread.submit(share, lane) for lane, (thread, share) in enumerate(zip(self._lane_threads,
                                                                                               shares))]
                wait(running)  # all of them, even when one fails: the lanes are free only then
                return [future.result() for future in running]
            return self._lane_threads[grant].submit(lane_work, grant).result()
        finally:
            with self._changed:
                if grant == WIDE:
                    self._wide_busy = False
                elif grant == ALL_LANES:
                    self._free_lanes = list(range(self.lanes))
                else:
                    self._free_lanes.append(grant)
                self._changed.notify_all()

    def _acquire(self, may_take_a_lane: bool, may_take_all_lanes: bool) -> int:
        me = object()
        with self._changed:
            self._waiting.append(me)
            try:
                while (grant := self._grant_for(me, may_take_a_lane, may_take_all_lanes)) is None:
                    self._changed.wait()
            finally:  # granted, or interrupted while waiting (KeyboardInterrupt): out of the line either way
                self._waiting.remove(me)
                self._changed.notify_all()  # the next in line may start too
            return grant

    def _grant_for(self, me: object, may_take_a_lane: bool, may_take_all_lanes: bool) -> Optional[int]:
        """What `me` gets now (taken from the free ones), or None: nothing yet, or not its turn."""
        if self._waiting[0] is not me:
            return None
        idle = not self._wide_busy and len(self._free_lanes) == self.lanes
        alone = len(self._waiting) == 1
        if idle and alone and may_take_all_lanes:
            self._free_lanes = []
            return ALL_LANES
        if idle and (not may_take_a_lane or alone or not self.lanes):
            self._wide_busy = True
            return WIDE
        if may_take_a_lane and not self._wide_busy and self._free_lanes:
            return self._free_lanes.pop(0)
        return None

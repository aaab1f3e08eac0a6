"""`model_train_every`: counting annotation webhooks per project and tag (training/job.py)."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from training.job import counts_towards_training

WEBHOOKS = 40


class SlowStore:
    """A project's store whose reads take a while, as a busy SQLite or Redis does: a count made
    of an unguarded read and write loses the webhooks that arrive meanwhile."""

    project_id = "5"

    def __init__(self):
        self.values, self.guard = {}, threading.Lock()

    def get(self, key):
        with self.guard:
            value = self.values.get(key)
        time.sleep(0.002)
        return value

    def set(self, key, value):
        with self.guard:
            self.values[key] = value


class EveryTag:
    from_name = "label"

    def __init__(self, every):
        self.every = every

    def optional_int(self, name):
        return self.every if name == "model_train_every" else None


def annotation_event():
    return {"annotation": {"result": [{"from_name": "label", "value": {}}]}}


def test_parallel_webhooks_are_each_counted_once(monkeypatch, tmp_path):
    monkeypatch.setenv("MODEL_DIR", str(tmp_path))
    store, tag = SlowStore(), EveryTag(every=10)
    with ThreadPoolExecutor(8) as pool:
        due = list(pool.map(lambda _: counts_towards_training(store, tag, annotation_event()), range(WEBHOOKS)))
    assert due.count(True) == WEBHOOKS // 10, "every 10th annotation starts a training"
    assert store.values["annotations_since_training:label"] == "0"


def test_annotations_without_the_tag_or_cancelled_do_not_count(monkeypatch, tmp_path):
    monkeypatch.setenv("MODEL_DIR", str(tmp_path))
    store, tag = SlowStore(), EveryTag(every=1)
    assert not counts_towards_training(store, tag, {"annotation": {"result": [{"from_name": "other"}]}})
    assert not counts_towards_training(store, tag, {"annotation": {**annotation_event()["annotation"],
                                                                   "was_cancelled": True}})
    assert counts_towards_training(store, tag, annotation_event())

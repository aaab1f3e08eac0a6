"""`model_train_every`: counting annotation webhooks per project and tag (training/job.py)."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from control_models.context import ControlContext
from label_studio_ml.settings import Settings
from training.job import counts_towards_training
from utils.settings import YoloSettings

WEBHOOKS = 40


class SlowStore:
    """A project's store whose reads take a while, as a busy SQLite or Redis does: a count made
    of an unguarded read and write loses the webhooks that arrive meanwhile."""

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


def no_media(url, task_id=None):
    raise AssertionError("counting annotations fetches no media")


class EveryTag:
    """A control model of a tag with `model_train_every`, of project 5 with `store` and `model_dir`."""

    from_name = "label"

    def __init__(self, every, store, model_dir):
        self.every = every
        self.context = ControlContext(project_id="5", settings=Settings(model_dir=str(model_dir)), yolo=YoloSettings(),
                                      store=store, local_path=no_media)

    def optional_int(self, name):
        return self.every if name == "model_train_every" else None


def annotation_event():
    return {"annotation": {"result": [{"from_name": "label", "value": {}}]}}


def test_parallel_webhooks_are_each_counted_once(tmp_path):
    store = SlowStore()
    tag = EveryTag(every=10, store=store, model_dir=tmp_path)
    with ThreadPoolExecutor(8) as pool:
        due = list(pool.map(lambda _: counts_towards_training(tag, annotation_event()), range(WEBHOOKS)))
    assert due.count(True) == WEBHOOKS // 10, "every 10th annotation starts a training"
    assert store.values["annotations_since_training:label"] == "0"


def test_annotations_without_the_tag_or_cancelled_do_not_count(tmp_path):
    tag = EveryTag(every=1, store=SlowStore(), model_dir=tmp_path)
    assert not counts_towards_training(tag, {"annotation": {"result": [{"from_name": "other"}]}})
    assert not counts_towards_training(tag, {"annotation": {**annotation_event()["annotation"], "was_cancelled": True}})
    assert counts_towards_training(tag, annotation_event())

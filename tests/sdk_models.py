"""Model classes used by the SDK tests (importable by child server processes too)."""

import json
import time

from label_studio_ml.api import init_app
from label_studio_ml.exceptions import NotFound
from label_studio_ml.model import LabelStudioMLBase


class EchoModel(LabelStudioMLBase):
    """Predicts a Choices region naming the task's `text`; a task whose text is "boom" fails the
    batch (as a naive model would), "missing" raises a 404-style media error."""

    def setup(self):
        self.set("model_version", "echo-1")

    def predict(self, tasks, context=None, **kwargs):
        predictions = []
        for task in tasks:
            text = task["data"].get("text")
            if text == "boom":
                raise RuntimeError("model exploded on this task")
            if text == "missing":
                raise NotFound("File not found: /nowhere/missing.jpg")
            if text == "sleep":
                time.sleep(1.5)
            predictions.append({
                "result": [{"from_name": "label", "to_name": "text", "type": "choices",
                            "value": {"choices": [str(text)]}, "score": 0.8}],
                "context": context, "params": kwargs, "project": self.project_id,
                "extra_params": self.extra_params,
            })
        return predictions

    def fit(self, event, data, **kwargs):
        count = int(self.get("fit_count") or 0) + 1
        self.set("fit_count", str(count))
        self.set("last_event", event)
        self.set("last_fit", json.dumps({"annotation": data.get("annotation"), "task": data.get("task"),
                                         "label_config": self.label_config}))
        return {"event": event, "fit_count": count, "keys": sorted(data)}


class ShortModel(LabelStudioMLBase):
    """Forgets the last task of every batch."""

    def predict(self, tasks, context=None, **kwargs):
        return [{"result": []} for _ in tasks[:-1]]


class NoScoreModel(LabelStudioMLBase):
    """Returns predictions without version or score: the server must fill both."""

    def predict(self, tasks, context=None, **kwargs):
        return [{"result": [{"score": 0.2}, {"score": 0.4}]} for _ in tasks]


app = init_app(EchoModel)


class LongModel(EchoModel):
    """Tasks with `"long": true` in their data go to a background job; `seconds` makes them slow."""

    def runs_in_background(self, task):
        return bool(task["data"].get("long"))

    def predict(self, tasks, context=None, **kwargs):
        for task in tasks:
            time.sleep(float(task["data"].get("seconds", 0)))
        return super().predict(tasks, context, **kwargs)


long_app = init_app(LongModel)

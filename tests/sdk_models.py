"""Model classes used by the SDK tests (importable by child server processes too)."""

import json
import time

from label_studio_ml import jobs
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
    """Answers too few predictions: nothing for a task whose text is "nothing", and of a batch of
    several tasks it loses the last prediction (so which one belongs to which task is unknown)."""

    def predict(self, tasks, context=None, **kwargs):
        predictions = [{"result": [{"from_name": "label", "to_name": "text", "type": "choices",
                                    "value": {"choices": [task["data"]["text"]]}}]}
                       for task in tasks if task["data"]["text"] != "nothing"]
        return predictions[:-1] if len(tasks) > 1 else predictions


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


class TrainingModel(EchoModel):
    """`START_TRAINING` submits a background training (`jobs.submit_model_method`) and answers its
    id; the training reports progress per "epoch" and returns its figures."""

    TRAINS_IN_BACKGROUND = True

    def fit(self, event, data, **kwargs):
        if event != "START_TRAINING":
            return super().fit(event, data, **kwargs)
        epochs = int(data.get("epochs", 3))
        return {"job_id": jobs.submit_model_method(self, "train", epochs, float(data.get("seconds", 0.3)),
                                                   description="train", queue_name="sdk-train"),
                "status": "queued"}

    def train(self, epochs: int, seconds: float) -> dict:
        if epochs < 1:
            raise ValueError("nothing to train: epochs must be at least 1")
        for epoch in range(1, epochs + 1):
            time.sleep(seconds)
            jobs.report_progress({"epoch": epoch, "epochs": epochs})
        self.set("trained_epochs", str(epochs))
        return {"epochs": epochs, "project": self.project_id, "label_config": self.label_config}


training_app = init_app(TrainingModel)

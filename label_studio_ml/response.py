"""`ModelResponse`: what `predict` may return instead of a plain list of predictions."""

import math
from typing import Any, List, Optional

from pydantic import BaseModel, ConfigDict


def _as_dict(prediction: Any) -> dict:
    if isinstance(prediction, BaseModel):
        return prediction.model_dump(exclude_none=True)
    return dict(prediction)


def task_error(model_version: str, detail: str) -> dict:
    """The prediction for a task that could not be predicted: Label Studio stores it as an empty
    prediction (it ignores `error`) and the other tasks of the batch keep theirs."""
    return {"result": [], "score": 0, "model_version": model_version, "error": detail}


class ModelResponse(BaseModel):
    """Predictions plus the model version they were made with."""

    model_config = ConfigDict(protected_namespaces=(), arbitrary_types_allowed=True)

    model_version: Optional[str] = None
    predictions: List[Any]

    def has_model_version(self) -> bool:
        return bool(self.model_version)

    def set_version(self, version: str) -> None:
        self.model_version = str(version)
        self.update_predictions_version()

    def update_predictions_version(self) -> None:
        """Give every prediction without its own `model_version` the response's version."""
        self.predictions = [_as_dict(p) for p in self.predictions]
        if self.model_version:
            for prediction in self.predictions:
                if not prediction.get("model_version"):
                    prediction["model_version"] = self.model_version

    def serialize(self) -> dict:
        return {
            "model_version": self.model_version,
            "predictions": [_as_dict(p) for p in self.predictions],
        }


def numeric_score(prediction: dict) -> float:
    """Label Studio rejects a whole batch when a score is not a number: make sure it is one
    (the given score, else the mean of the region scores, else 0)."""
    score = prediction.get("score")
    if isinstance(score, (int, float)) and not isinstance(score, bool) and math.isfinite(score):
        return float(score)
    region_scores = [
        r["score"] for r in prediction.get("result") or []
        if isinstance(r, dict) and isinstance(r.get("score"), (int, float)) and math.isfinite(r["score"])
    ]
    return float(sum(region_scores) / len(region_scores)) if region_scores else 0.0


def normalize_predictions(response: Any, version: str) -> List[dict]:
    """Whatever `predict` returned (list, `ModelResponse`, dict with `predictions`) as a list of
    prediction dicts, each with a string `model_version` and a numeric `score`."""
    if isinstance(response, ModelResponse):
        if not response.has_model_version():
            response.set_version(version)
        else:
            response.update_predictions_version()
        predictions = response.predictions
    elif isinstance(response, dict):
        predictions = response.get("predictions", [response])
        version = response.get("model_version") or version
    else:
        predictions = response or []
    out = []
    for prediction in predictions:
        prediction = _as_dict(prediction)
        prediction["model_version"] = str(prediction.get("model_version") or version)
        prediction["score"] = numeric_score(prediction)
        prediction.setdefault("result", [])
        out.append(prediction)
    return out

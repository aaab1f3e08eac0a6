"""`ModelResponse`: what `predict` may return instead of a plain list of predictions."""

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

"""What a control model may use of the backend that built it: the contract between the two.

`YOLO` builds one `ControlContext` per instance (one request, webhook or job) and gives it to
every control model it builds for that request; control models never see the model instance.
"""

import functools
from dataclasses import dataclass
from typing import Callable

from label_studio_ml.settings import Settings
from utils.inference import InferenceOptions
from utils.project_store import Store
from utils.settings import YoloSettings


@dataclass(frozen=True)
class ControlContext:
    project_id: str                  # "" when the caller named no project
    settings: Settings               # the SDK's: MODEL_DIR, Label Studio, jobs
    yolo: YoloSettings               # weights, inference, training, caches
    store: Store                     # the project's keys in the per-project store
    # `local_path(url, task_id=...)`: the local file of a task's media, downloaded (once) with the
    # request's Label Studio credentials (`LabelStudioMLBase.get_local_path`).
    local_path: Callable[..., str]

    @functools.cached_property
    def inference(self) -> InferenceOptions:
        """How the request's weights are run (the device resolved once per request)."""
        return InferenceOptions.from_settings(self.yolo, self.settings)

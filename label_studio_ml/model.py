"""`LabelStudioMLBase`: the class users subclass to serve a model to Label Studio.

One instance is built per request (`ModelClass(project_id=..., label_config=..., settings=...)`),
so it must stay cheap: heavy objects (weights, trackers) belong in module- or class-level caches.
State that must outlive the request goes into the per-project store (`get`/`set`). The server
hands every instance its settings; an instance built without (an RQ worker, a script) takes the
class's `default_settings()`.
"""

import functools
import json
import logging
import re
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import semver

from . import media
from .label_config import build_label_map, get_label_interface, get_parsed_label_config
from .response import ModelResponse
from .settings import Settings, default_settings as process_settings
from .store import KeyValueStore, ProjectStore, open_store

logger = logging.getLogger(__name__)

_predict_fn: Optional[Callable] = None
_update_fn: Optional[Callable] = None


def predict_fn(f: Callable) -> Callable:
    """Register a plain function `f(tasks, context, helper, **kwargs)` as the model's `predict`."""
    global _predict_fn
    _predict_fn = f
    return f


def update_fn(f: Callable) -> Callable:
    """Register a plain function `f(event, data, helper, **kwargs)` as the model's `fit`."""
    global _update_fn
    _update_fn = f
    return f


def is_preload_needed(value: str) -> bool:
    return isinstance(value, str) and value.startswith(
        ("upload", "/upload", "/data/upload", "/data/local-files", "/storage-data/", "s3:", "gs:", "azure-blob:", "http://", "https://")
    )


class LabelStudioMLBase:
    """Base class of an ML backend model. Override `setup`, `predict` and, optionally, `fit`."""

    INITIAL_VERSION = "0.0.1"
    # Webhook events that reach `fit`; any other event is answered 200 "Unknown event".
    TRAIN_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED", "START_TRAINING")
    # True when `fit` hands its long work to `jobs.submit` itself and answers at once: the server
    # then calls it in the request even with BACKGROUND_JOBS (instead of running all of `fit` on a worker).
    TRAINS_IN_BACKGROUND = False

    def __init__(self, project_id: Optional[str] = None, label_config: Optional[str] = None,
                 settings: Optional[Settings] = None, **kwargs):
        self.settings = settings or type(self).default_settings()
        self.project_id = str(project_id) if project_id not in (None, "") else ""
        self.kwargs = kwargs
        self._label_config = None
        if label_config:
            self.use_label_config(label_config)
        self.setup()

    # ----- to override -------------------------------------------------------------------------
    @classmethod
    def default_settings(cls) -> Settings:
        """The settings of an instance built without any (and of `init_app` given none): the
        process's, read from the environment once. Override e.g. for another `MODEL_DIR` default."""
        return process_settings()

    def setup(self):
        """Called after construction: set e.g. `self.set("model_version", "my-model-v1")`."""

    def predict(self, tasks: List[Dict], context: Optional[Dict] = None, **kwargs) -> Union[List[Dict], ModelResponse]:
        """Return one prediction per task (same order), or a `ModelResponse`."""
        if _predict_fn is not None:
            return _predict_fn(tasks, context, helper=self, **kwargs)
        return []

    def fit(self, event: str, data: Dict, **kwargs) -> Any:
        """React to a webhook event (`ANNOTATION_CREATED`, `START_TRAINING`, ...); return JSON-able data."""
        if _update_fn is not None:
            return _update_fn(event, data, helper=self, **kwargs)
        return None

    def runs_in_background(self, task: Dict) -> bool:
        """True for a task too long for Label Studio's `/predict` timeout: with `BACKGROUND_JOBS`
        on, it is predicted by an RQ worker and uploaded to Label Studio instead."""
        return False

    @classmethod
    def backend_status(cls, settings: Settings, **model_kwargs) -> Dict[str, Any]:
        """Extra fields for `/health` and `/metrics` (device, loaded models...) of a server with
        `settings` whose instances get `model_kwargs`. Must be instant."""
        return {}

    # ----- per-project store -------------------------------------------------------------------
    @property
    def store(self) -> KeyValueStore:
        """The store of the settings (`CACHE_TYPE`), shared by every instance of the process."""
        return open_store(self.settings)

    @functools.cached_property
    def project_store(self) -> ProjectStore:
        """This project's keys in `store` (looked up once: the settings and the project are fixed)."""
        return ProjectStore(self.store, self.project_id)

    def get(self, key: str) -> Optional[str]:
        return self.project_store.get(key)

    def set(self, key: str, value: str) -> None:
        """Store `value` for this project; a write happens only when the value changes."""
        self.project_store.set(key, value)

    def has(self, key: str) -> bool:
        return self.project_store.has(key)

    # ----- labeling config ---------------------------------------------------------------------
    def use_label_config(self, label_config: str) -> None:
        """Use `label_config` for this instance and remember it for the project when it changed."""
        self._label_config = label_config
        self.set("label_config", label_config)

    @property
    def label_config(self) -> Optional[str]:
        if self._label_config is None:
            self._label_config = self.get("label_config")
        return self._label_config

    @property
    def parsed_label_config(self) -> dict:
        return get_parsed_label_config(self.label_config) if self.label_config else {}

    @property
    def label_interface(self):
        """The parsed `LabelInterface` (cached per XML text; treat as read-only)."""
        return get_label_interface(self.label_config) if self.label_config else None

    def get_first_tag_occurence(self, control_type, object_type, name_filter=None, to_name_filter=None) -> Tuple[str, str, str]:
        """`(from_name, to_name, value)` of the first control of `control_type` on an `object_type` tag."""
        return self.label_interface.get_first_tag_occurence(
            control_type, object_type, name_filter=name_filter, to_name_filter=to_name_filter
        )

    def build_label_map(self, control_name: str, model_names) -> Dict[str, str]:
        """`{model class name: label}` for a control (rules in `label_config.build_label_map`)."""
        return build_label_map(self.label_interface, control_name, model_names)

    # ----- model version -----------------------------------------------------------------------
    @property
    def model_version(self) -> Union[semver.Version, str]:
        version = self.get("model_version") or self.INITIAL_VERSION
        try:
            return semver.Version.parse(version)
        except ValueError:
            return version

    def available_versions(self) -> List[str]:
        """What `/versions` lists for the project (a model that keeps several overrides it)."""
        return [str(self.model_version)]

    def bump_model_version(self) -> str:
        """Next version: minor bump for semver (`0.0.1` -> `0.1.0`), else a counter suffix (`yolo` -> `yolo.1`)."""
        current = self.model_version
        if isinstance(current, semver.Version):
            new = str(current.bump_minor())
        else:
            match = re.fullmatch(r"(.*)\.(\d+)", current)
            new = f"{match.group(1)}.{int(match.group(2)) + 1}" if match else f"{current}.1"
        self.set("model_version", new)
        return new

    # ----- extra params from "Connect Model" ---------------------------------------------------
    def set_extra_params(self, extra_params: Dict) -> None:
        self.set("extra_params", json.dumps(extra_params, sort_keys=True))

    @property
    def extra_params(self) -> Dict:
        raw = self.get("extra_params")
        return json.loads(raw) if raw else {}

    # ----- media -------------------------------------------------------------------------------
    def set_label_studio_access(self, hostname: Optional[str], access_token: Optional[str]) -> None:
        """Remember the Label Studio URL and token `/setup` sent, a fallback for media downloads.

        They are kept as the pair they came as: a new hostname replaces the token too (sent alone,
        it comes with none), so a token never reaches a host other than the one it came with."""
        if not hostname and not access_token:
            return
        pair = {"hostname": media.valid_label_studio_url(hostname), "access_token": access_token or None}
        if hostname and not pair["hostname"]:
            logger.warning("/setup sent hostname %r, which is no http(s) URL: ignored", str(hostname)[:100])
        self.set("label_studio_access", json.dumps(pair, sort_keys=True))

    def label_studio_access(self) -> Dict[str, Optional[str]]:
        """The `{"hostname", "access_token"}` pair `/setup` sent last (empty dict if none)."""
        raw = self.get("label_studio_access")
        return json.loads(raw) if raw else {}

    def get_local_path(self, url: str, task_id=None, hostname=None, access_token=None, cache_dir=None) -> str:
        """Local path of task media: local files as is, anything else downloaded once and cached.

        Credentials: arguments, else `LABEL_STUDIO_URL`/`LABEL_STUDIO_API_KEY`, else what `/setup`
        sent, never a token to a host it did not come with (`media.media_credentials`).
        """
        hostname, access_token = media.media_credentials(self.settings, self.label_studio_access(), hostname, access_token)
        return media.get_local_path(self.settings, url, task_id=task_id, hostname=hostname, access_token=access_token,
                                    cache_dir=cache_dir)

    def preload_task_data(self, task: Dict, value: Any = None, read_file: bool = True) -> Any:
        """Replace media URLs inside `value` (recursively) by file contents, or paths if `read_file` is False."""
        if isinstance(value, dict):
            return {k: self.preload_task_data(task, v, read_file) for k, v in value.items()}
        if isinstance(value, list):
            return [self.preload_task_data(task, v, read_file) for v in value]
        if is_preload_needed(value):
            path = self.get_local_path(value, task_id=task.get("id"))
            if not read_file:
                return path
            with open(path) as f:
                return f.read()
        return value

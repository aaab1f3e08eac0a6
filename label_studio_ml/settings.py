"""The SDK's settings, read from the environment once and then passed around, frozen.

`init_app` builds them (or takes the ones it is given) and hands them to everything that needs
one: the per-project store, media downloads, background jobs, the admission gate and every model
instance (`LabelStudioMLBase.settings`). Code outside a server (an RQ worker, a command-line tool,
a test) builds its own with `Settings.from_env()` or `Settings(...)`; `default_settings()` is the
one process-wide reading for code that is given none.

Every field is named after its environment variable, lower-cased (other names in `_NAMES`); `debug`
comes from the command line only.
"""

import functools
import os
from dataclasses import dataclass, field, fields, replace
from typing import Mapping, Optional

from .parsing import parse_bool


class SettingsError(ValueError):
    """A setting (an environment variable) whose value cannot be used; the message names it and
    says what it must be, so it is all a user needs to see (no traceback)."""


@dataclass(frozen=True)
class Settings:
    # where state lives
    model_dir: str = "."
    media_cache_dir: str = ""               # default: <model_dir>/media-cache
    cache_type: str = "sqlite"              # per-project store: sqlite (in model_dir) or redis
    redis_url: str = "redis://localhost:6379/0"
    # Label Studio
    label_studio_url: str = ""              # alias LABEL_STUDIO_HOST
    label_studio_api_key: str = ""          # alias LABEL_STUDIO_ACCESS_TOKEN
    label_studio_check: bool = True         # one reachability line at start-up
    # the HTTP layer
    host: str = "0.0.0.0"                   # where gunicorn_config.py and `python _wsgi.py` listen
    port: int = 9090
    workers: int = 1                        # gunicorn worker processes
    basic_auth_user: Optional[str] = None   # alias ML_SERVER_BASIC_AUTH_USER
    basic_auth_pass: Optional[str] = None   # alias ML_SERVER_BASIC_AUTH_PASS
    # tracebacks in 500 answers: `--debug` only, never from the environment (a variable as common as
    # DEBUG set for something else must not expose them)
    debug: bool = field(default=False, metadata={"from_env": False})
    log_level: str = "INFO"
    max_request_mb: int = 100
    webhook_max_mb_unauthenticated: int = 10
    request_body_timeout: float = 30.0
    max_json_depth: int = 100               # Label Studio's payloads nest about ten levels deep
    # admission
    threads: int = 0                        # threads the server runs the app with; 0: unknown (Flask's
                                            # development server); gunicorn_config.py tells each worker
    reserved_threads: int = 2
    predict_concurrency: int = 4
    predict_queue_size: int = 64
    predict_queue_timeout: float = 90.0
    predict_chunk_size: int = 32
    # media downloads
    media_connect_timeout: float = 5.0
    media_read_timeout: float = 30.0
    media_total_timeout: float = 60.0
    media_max_bytes: int = 512 * 1024 * 1024
    media_cache_max_mb: int = 2048
    # background jobs
    background_jobs: bool = False
    jobs_queue: str = "label-studio-ml"
    job_retries: int = 2
    job_timeout: int = 3600
    job_result_ttl: int = 7 * 24 * 3600

    def __post_init__(self):
        object.__setattr__(self, "model_dir", os.path.abspath(self.model_dir))
        object.__setattr__(self, "label_studio_url", (self.label_studio_url or "").strip().rstrip("/"))
        object.__setattr__(self, "label_studio_api_key", (self.label_studio_api_key or "").strip())
        object.__setattr__(self, "cache_type", self.cache_type.strip().lower())
        if self.cache_type not in ("sqlite", "redis"):
            raise SettingsError(f"CACHE_TYPE must be 'sqlite' or 'redis', not {self.cache_type!r}")

    @property
    def media_cache_path(self) -> str:
        """`MEDIA_CACHE_DIR`, else `<MODEL_DIR>/media-cache`."""
        return os.path.abspath(self.media_cache_dir) if self.media_cache_dir else os.path.join(self.model_dir, "media-cache")

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None, **overrides) -> "Settings":
        """Settings from `environ` (default `os.environ`): a variable that is unset or empty keeps
        the field's default; `overrides` (field names) win over both. A value that does not parse
        is a `SettingsError` (a ValueError) naming the variable."""
        return cls(**{**read_fields(cls, os.environ if environ is None else environ), **overrides})

    def replace(self, **changes) -> "Settings":
        return replace(self, **changes)


# The variables a field is read from, first set one winning, where they are not just its name
# upper-cased: names users of the original know the same settings by.
_NAMES = {
    "label_studio_url": ("LABEL_STUDIO_URL", "LABEL_STUDIO_HOST"),
    "label_studio_api_key": ("LABEL_STUDIO_API_KEY", "LABEL_STUDIO_ACCESS_TOKEN"),
    "basic_auth_user": ("ML_SERVER_BASIC_AUTH_USER", "BASIC_AUTH_USER"),
    "basic_auth_pass": ("ML_SERVER_BASIC_AUTH_PASS", "BASIC_AUTH_PASS"),
}


def read_fields(settings_class, environ: Mapping[str, str], names: Optional[Mapping[str, tuple]] = None) -> dict:
    """`{field: parsed value}` for the fields of the dataclass `settings_class` whose environment
    variable (the field name upper-cased, or the ones `names` lists for it) is set. An empty value
    keeps the field's default, except for a boolean, where it means false (`X=` turns X off, as
    it always did)."""
    names = _NAMES if names is None else names
    values = {}
    for item in fields(settings_class):
        if not item.metadata.get("from_env", True):
            continue
        default = getattr(settings_class, item.name, None)
        variables = names.get(item.name, (item.name.upper(),))
        set_values = [environ[name] for name in variables if environ.get(name) is not None]
        raw = next((value for value in set_values if value != ""), "" if set_values and isinstance(default, bool) else None)
        if raw is None:
            continue
        try:
            if isinstance(default, bool):
                values[item.name] = parse_bool(raw)
            elif isinstance(default, int):
                values[item.name] = int(raw)
            elif isinstance(default, float):
                values[item.name] = float(raw)
            elif isinstance(default, tuple):
                values[item.name] = tuple(part.strip() for part in raw.split(",") if part.strip())
            else:
                values[item.name] = raw
        except ValueError:
            raise SettingsError(f"{variables[0]}={raw!r} is not a valid {type(default).__name__}") from None
    return values


@functools.lru_cache(maxsize=1)
def default_settings() -> Settings:
    """The process's settings read from the environment, once (for code given no settings)."""
    return Settings.from_env()

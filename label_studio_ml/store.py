"""Per-project key/value store behind `LabelStudioMLBase.get/set/has`.

Two backends, picked by the settings' `cache_type` (`CACHE_TYPE`):
- `sqlite` (default): one file, `MODEL_DIR/cache.db`, in WAL mode with a long busy timeout and
  one connection per thread and process, so gunicorn threads and workers never see
  "database is locked" or lose a write.
- `redis`: a hash per project on `REDIS_URL`, so replicas behind a load balancer share state.

Values are strings (anything else is stored as its JSON text).
"""

import json
import logging
import os
import sqlite3
import threading
import time
from typing import Dict, Optional

from .settings import Settings

logger = logging.getLogger(__name__)


def _as_text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


class KeyValueStore:
    """Interface of a per-project store."""

    def get(self, project: str, key: str) -> Optional[str]:
        raise NotImplementedError

    def set(self, project: str, key: str, value) -> None:
        raise NotImplementedError

    def delete(self, project: str, key: str) -> None:
        raise NotImplementedError

    def items(self, project: str) -> Dict[str, str]:
        raise NotImplementedError

    def has(self, project: str, key: str) -> bool:
        return self.get(project, key) is not None

    def describe(self) -> str:
        raise NotImplementedError


class ProjectStore:
    """The keys of one project in a `KeyValueStore` (what a model instance keeps for its project)."""

    def __init__(self, store: KeyValueStore, project: str):
        self.store = store
        self.project = project

    def get(self, key: str) -> Optional[str]:
        return self.store.get(self.project, key)

    def set(self, key: str, value) -> None:
        """Store `value` (text, else JSON); a write happens only when the value changes."""
        text = _as_text(value)
        if self.store.get(self.project, key) != text:
            self.store.set(self.project, key, text)

    def has(self, key: str) -> bool:
        return self.store.has(self.project, key)


class SQLiteStore(KeyValueStore):
    BUSY_TIMEOUT_S = 60

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self._local = threading.local()
        self._with_retry(self._create_schema)

    def describe(self) -> str:
        return f"sqlite:{self.path}"

    def _connection(self) -> sqlite3.Connection:
        # A connection must not cross a fork (gunicorn preload) nor be shared between threads.
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():
            conn = sqlite3.connect(self.path, timeout=self.BUSY_TIMEOUT_S, isolation_level=None)
            conn.execute("PRAGMA busy_timeout = %d" % (self.BUSY_TIMEOUT_S * 1000))
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def _create_schema(self):
        conn = self._connection()
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS kv ("
            " project TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,"
            " PRIMARY KEY (project, key))"
        )

    def _with_retry(self, fn, *args):
        """Run `fn`; retry the rare lock errors SQLite reports despite busy_timeout (schema/WAL switch)."""
        deadline = time.monotonic() + self.BUSY_TIMEOUT_S
        while True:
            try:
                return fn(*args)
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def get(self, project, key):
        row = self._with_retry(
            lambda: self._connection()
            .execute("SELECT value FROM kv WHERE project = ? AND key = ?", (project, key))
            .fetchone()
        )
        return row[0] if row else None

    def set(self, project, key, value):
        self._with_retry(
            lambda: self._connection().execute(
                "INSERT INTO kv (project, key, value) VALUES (?, ?, ?)"
                " ON CONFLICT (project, key) DO UPDATE SET value = excluded.value",
                (project, key, _as_text(value)),
            )
        )

    def delete(self, project, key):
        self._with_retry(
            lambda: self._connection().execute(
                "DELETE FROM kv WHERE project = ? AND key = ?", (project, key)
            )
        )

    def items(self, project):
        rows = self._with_retry(
            lambda: self._connection()
            .execute("SELECT key, value FROM kv WHERE project = ?", (project,))
            .fetchall()
        )
        return dict(rows)


class RedisStore(KeyValueStore):
    """One Redis hash per project: `<prefix>:project:<id>`."""

    def __init__(self, url: str, prefix: str = "label-studio-ml"):
        import redis  # imported here: only deployments that choose Redis need the package

        self.url = url
        self.prefix = prefix
        self._client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=10)

    def describe(self) -> str:
        # never expose a password that may sit in the URL
        return "redis:" + self.url.rsplit("@", 1)[-1]

    def _key(self, project):
        return f"{self.prefix}:project:{project}"

    def get(self, project, key):
        return self._client.hget(self._key(project), key)

    def set(self, project, key, value):
        self._client.hset(self._key(project), key, _as_text(value))

    def delete(self, project, key):
        self._client.hdel(self._key(project), key)

    def items(self, project):
        return self._client.hgetall(self._key(project))

    @property
    def client(self):
        return self._client


_stores: Dict[tuple, KeyValueStore] = {}
_stores_lock = threading.Lock()


def open_store(settings: Settings) -> KeyValueStore:
    """The process-wide store `settings` name (one per kind and location, created once, reused)."""
    if settings.cache_type == "redis":
        key = ("redis", settings.redis_url)
    else:
        key = ("sqlite", os.path.join(settings.model_dir, "cache.db"))
    store = _stores.get(key)
    if store is None:
        with _stores_lock:
            store = _stores.get(key)
            if store is None:
                kind, location = key
                store = RedisStore(location) if kind == "redis" else SQLiteStore(location)
                logger.info("Per-project store: %s", store.describe())
                _stores[key] = store
    return store

"""What trained versions, training counts and job ids are kept in: one project's keys of the SDK's
key/value store (`label_studio_ml.store.ProjectStore`, shared by threads, gunicorn workers and,
with Redis, replicas), or a dict-like stand-in in tests."""

from typing import Optional, Protocol


class Store(Protocol):
    def get(self, key: str) -> Optional[str]: ...

    def set(self, key: str, value: str) -> None: ...

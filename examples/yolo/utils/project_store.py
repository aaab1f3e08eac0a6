"""One project's view of the SDK's key/value store: what trained versions, training counts and
job ids are kept in (the store is shared by threads, gunicorn workers and, with Redis, replicas)."""

from typing import Optional, Protocol

from label_studio_ml.store import KeyValueStore


class Store(Protocol):
    """A project's key/value store: `ProjectStore`, or a dict-like stand-in in tests."""

    def get(self, key: str) -> Optional[str]: ...

    def set(self, key: str, value: str) -> None: ...


class ProjectStore:
    """The keys of `project` in `store`."""

    def __init__(self, store: KeyValueStore, project: str):
        self.store = store
        self.project = project

    def get(self, key: str) -> Optional[str]:
        return self.store.get(self.project, key)

    def set(self, key: str, value: str) -> None:
        self.store.set(self.project, key, value)

"""The trained versions of a project's control tags, and which of them serve.

Files: `MODEL_ROOT/trained/<project>/<tag>/v<N>/` holds `weights.pt` and `metrics.json`. A run
writes into a hidden staging folder next to them and becomes `v<N>` by one rename, so readers
(other threads, gunicorn workers, replicas sharing MODEL_ROOT) see a whole version or none.

Numbers count per project, across its tags, so one number names the state of the whole project:
the project's version `N` serves, for each tag, that tag's highest *published* version `<= N`
(none: the tag's own `model_path`). Rejected runs (worse than the serving version) are kept and
numbered but never serve. The project serves its highest published number, unless a pin (set from
the Connect Model extra params `{"model_version": ...}`, kept in the per-project store) holds it
at an older one: that is the rollback. Everything is read back from the files and the store, so
it survives restarts. A request reads all of it once (`TrainedVersions.snapshot`, a
`ServingState`) and takes both its weights and its `model_version` from that reading.
"""

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple

from utils.files import exclusive
from utils.project_store import Store

logger = logging.getLogger(__name__)

TRAINED_DIR = "trained"
WEIGHTS_FILE = "weights.pt"
METRICS_FILE = "metrics.json"
PIN_KEY = "trained_version_pin"
CLASSIFIER_TRAININGS_KEY = "classifier_trainings"
STAGING_PREFIX = ".staging-"
_VERSION_DIR = re.compile(r"v([1-9][0-9]*)")
_SAFE_COMPONENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}")


def path_component(text: str) -> str:
    """`text` as one folder name: itself when it is a plain name, else a readable form with a
    hash of the original, so two different names never share a folder."""
    text = str(text)
    if _SAFE_COMPONENT.fullmatch(text):
        return text
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._")[:40]
    return f"{readable}-{hashlib.blake2b(text.encode(), digest_size=4).hexdigest()}"


@dataclass(frozen=True)
class Version:
    tag: str
    number: int
    path: str
    metrics: dict

    @property
    def name(self) -> str:
        return f"v{self.number}"

    @property
    def published(self) -> bool:
        return self.metrics.get("published") is True

    @property
    def weights(self) -> str:
        return os.path.join(self.path, WEIGHTS_FILE)


@dataclass(frozen=True)
class ServingState:
    """What serves a project at one moment: the project's version `number` (0: the tags' own
    weights) and its published versions. A request reads it once and derives both its tags'
    weights and its `model_version` from it, so a publish or a pin meanwhile can never pair one
    version's name with another version's weights."""

    number: int
    published: Tuple[Version, ...]  # oldest first
    classifier_trainings: int = 0  # of the project's TimelineLabels classifiers (trained in place)

    def of_tag(self, tag: str) -> List[Version]:
        """The tag's published versions, oldest first."""
        folder = path_component(tag)
        return [v for v in self.published if os.path.basename(os.path.dirname(v.path)) == folder]

    def serving(self, tag: str) -> Optional[Version]:
        """The version of `tag` that serves: its newest published one within the project's
        version; None when the tag's own weights serve."""
        candidates = [v for v in self.of_tag(tag) if v.number <= self.number]
        return candidates[-1] if candidates else None

    def not_serving(self, tag: str) -> List[str]:
        """Weights of the tag's published versions that do not serve (a newer one does, or a pin
        holds an older one, or the tag's own weights)."""
        serving = self.serving(tag)
        return [v.weights for v in self.of_tag(tag) if v != serving]

    def project_version(self, base: str) -> str:
        """The `model_version` to answer for the project: `base` (e.g. "yolo") before any
        trained version serves, else `<base>-v<N>`; then `.c<K>` once its TimelineLabels
        classifiers have been trained K times (each training changes their predictions)."""
        name = f"{base}-v{self.number}" if self.number else base
        return f"{name}.c{self.classifier_trainings}" if self.classifier_trainings else name


class TrainedVersions:
    """The versions of one project (`project` is its id) under `model_root` (MODEL_ROOT); `store`
    (the project's) keeps its pin."""

    def __init__(self, project: str, store: Store, model_root: str):
        self.project = str(project)
        self.store = store
        self.root = os.path.join(model_root, TRAINED_DIR, path_component(self.project))

    def tag_dir(self, tag: str) -> str:
        return os.path.join(self.root, path_component(tag))

    # ----- reading ----------------------------------------------------------------------------
    def versions(self, tag: Optional[str] = None) -> List[Version]:
        """Every kept version (published or not) of `tag`, or of all tags, oldest first."""
        if tag is not None:
            directories = [self.tag_dir(tag)]
        else:
            directories = [os.path.join(self.root, n) for n in sorted(os.listdir(self.root))] \
                if os.path.isdir(self.root) else []
        found = []
        for directory in filter(os.path.isdir, directories):
            for entry in os.listdir(directory):
                match = _VERSION_DIR.fullmatch(entry)
                version = match and self._read(int(match.group(1)), os.path.join(directory, entry))
                if version:
                    found.append(version)
        return sorted(found, key=lambda v: v.number)

    @staticmethod
    def _read(number: int, path: str) -> Optional[Version]:
        try:
            with open(os.path.join(path, METRICS_FILE)) as f:
                metrics = json.load(f)
        except (OSError, ValueError) as exc:
            logger.warning("Trained version %s is unreadable (%s); ignored", path, exc)
            return None
        return Version(tag=metrics.get("tag", ""), number=number, path=path, metrics=metrics)

    def published_numbers(self) -> List[int]:
        return sorted({v.number for v in self.versions() if v.published})

    def pinned_number(self) -> Optional[int]:
        text = self.store.get(PIN_KEY)
        return int(text) if text else None

    def snapshot(self) -> ServingState:
        """What serves the project now, read once (the pin, every version's metrics.json)."""
        published = tuple(v for v in self.versions() if v.published)
        pinned = self.pinned_number()
        number = pinned if pinned is not None else max((v.number for v in published), default=0)
        return ServingState(number=number, published=published, classifier_trainings=self.classifier_trainings())

    def classifier_trainings(self) -> int:
        return int(self.store.get(CLASSIFIER_TRAININGS_KEY) or 0)

    def count_classifier_training(self) -> None:
        """One more training of one of the project's TimelineLabels classifiers: the project's
        version (`.c<K>`) changes, so Retrieve Predictions predicts its tasks again. A count of the
        project's, kept in the store rather than summed from the classifier files (whose own counts
        restart when a classifier is trained from scratch), so that no version name comes twice."""
        with exclusive(self.root):  # one count at a time among the project's threads and processes
            self.store.set(CLASSIFIER_TRAININGS_KEY, str(self.classifier_trainings() + 1))

    def serving(self, tag: str) -> Optional[Version]:
        return self.snapshot().serving(tag)

    def project_version(self, base: str) -> str:
        return self.snapshot().project_version(base)

    def version_names(self, base: str) -> List[str]:
        """What `/versions` lists: `base` (the tags' own weights) and every published version."""
        return [base] + [f"{base}-v{n}" for n in self.published_numbers()]

    # ----- pin / rollback -----------------------------------------------------------------------
    def pin(self, version: Optional[str], base: str) -> None:
        """Serve `version` (`<base>-v3`, `v3`, `3`; `base` for the tags' own weights) until
        unpinned; None or "" unpins (the newest published version serves). ValueError for a
        version that is not published."""
        if not version:
            if self.pinned_number() is not None:
                self.store.set(PIN_KEY, "")
                logger.info("Project %s: version unpinned; %s serves", self.project, self.project_version(base))
            return
        number = self._parse(str(version).strip(), base)
        if number and number not in self.published_numbers():
            raise ValueError(f"model_version {version!r} is not a published version of project {self.project}; "
                             f"published: {', '.join(self.version_names(base))}")
        if number != self.pinned_number():
            self.store.set(PIN_KEY, str(number))
            logger.info("Project %s: pinned to %s", self.project, self.project_version(base))

    @staticmethod
    def _parse(version: str, base: str) -> int:
        """The number `version` names; its `.c<K>` part, if any, is ignored: classifiers are
        trained in place, with no versions to go back to."""
        version = re.sub(r"\.c[0-9]+$", "", version)
        if version == base:
            return 0
        match = re.fullmatch(rf"(?:{re.escape(base)}-)?v?([0-9]+)", version)
        if not match:
            raise ValueError(f"model_version {version!r} is not {base!r} nor {base}-v<N>")
        return int(match.group(1))

    # ----- writing ------------------------------------------------------------------------------
    def used_numbers(self) -> List[int]:
        """Every number a `v<N>` folder of the project has, readable or not: a version whose
        metrics.json is lost still owns its number (the next publish must not rename onto it)."""
        numbers = []
        for tag in os.listdir(self.root) if os.path.isdir(self.root) else []:
            directory = os.path.join(self.root, tag)
            if os.path.isdir(directory):
                matches = map(_VERSION_DIR.fullmatch, os.listdir(directory))
                numbers += [int(match.group(1)) for match in matches if match]
        return numbers

    def remove_stale_staging(self, tag: str) -> None:
        """Staging folders of runs that died (killed, out of memory) before cleaning up. Only
        call it holding the tag's training lock: then no run of the tag is writing one."""
        directory = self.tag_dir(tag)
        for name in os.listdir(directory) if os.path.isdir(directory) else []:
            if name.startswith(STAGING_PREFIX):
                logger.info("Project %s, tag '%s': removing %s, left by a run that did not finish",
                            self.project, tag, name)
                shutil.rmtree(os.path.join(directory, name), ignore_errors=True)

    @contextlib.contextmanager
    def staging(self, tag: str) -> Iterator[str]:
        """A new hidden folder in the tag's folder for a run to write into; removed afterwards
        unless `publish` made it a version."""
        os.makedirs(self.tag_dir(tag), exist_ok=True)
        path = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.tag_dir(tag))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def publish(self, tag: str, staging: str, metrics: dict, serve: bool) -> Version:
        """Make the staging folder (holding `weights.pt`) version `v<N>` of `tag`, N the
        project's next number; `serve` says whether it may serve (a rejected run is kept)."""
        if not os.path.isfile(os.path.join(staging, WEIGHTS_FILE)):
            raise FileNotFoundError(f"{staging} holds no {WEIGHTS_FILE}")
        with exclusive(self.root):  # numbers are unique across the project's tags and processes
            number = max(self.used_numbers(), default=0) + 1
            metrics = {**metrics, "project": self.project, "tag": tag, "version": f"v{number}",
                       "published": bool(serve)}
            with open(os.path.join(staging, METRICS_FILE), "w") as f:
                json.dump(metrics, f, indent=2, sort_keys=True)
            path = os.path.join(self.tag_dir(tag), f"v{number}")
            os.rename(staging, path)
        logger.info("Project %s, tag '%s': v%d %s", self.project, tag, number, "published" if serve else "kept, not served")
        return Version(tag=tag, number=number, path=path, metrics=metrics)

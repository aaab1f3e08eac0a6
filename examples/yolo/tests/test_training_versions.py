"""Trained versions: files under MODEL_ROOT/trained/, numbering, which serves, pin/rollback,
restart safety with the real SQLite store."""

import json
import os
import threading

import pytest

from label_studio_ml.store import ProjectStore, SQLiteStore
from training.versions import METRICS_FILE, WEIGHTS_FILE, TrainedVersions, path_component

BASE = "yolo"


class DictStore(dict):
    def set(self, key, value):
        self[key] = value


def add_version(versions, tag, serve=True, metric=0.5):
    with versions.staging(tag) as staging:
        with open(os.path.join(staging, WEIGHTS_FILE), "w") as f:
            f.write(f"weights of {tag}")
        return versions.publish(tag, staging, {"metric": metric}, serve=serve)


def test_publish_numbers_versions_per_project_and_keeps_rejected_runs(tmp_path):
    versions = TrainedVersions("7", DictStore(), model_root=str(tmp_path))
    assert versions.project_version(BASE) == "yolo" and versions.serving("boxes") is None

    v1 = add_version(versions, "boxes")
    v2 = add_version(versions, "classes")
    v3 = add_version(versions, "boxes", serve=False)

    assert [v.name for v in (v1, v2, v3)] == ["v1", "v2", "v3"]
    assert v1.path == str(tmp_path / "trained" / "7" / "boxes" / "v1")
    with open(os.path.join(v3.path, METRICS_FILE)) as f:
        assert json.load(f) == {"metric": 0.5, "project": "7", "tag": "boxes", "version": "v3", "published": False}
    assert versions.serving("boxes") == v1, "a rejected run never serves"
    assert versions.serving("classes").weights == os.path.join(v2.path, WEIGHTS_FILE)
    assert versions.project_version(BASE) == "yolo-v2"
    assert versions.version_names(BASE) == ["yolo", "yolo-v1", "yolo-v2"]
    assert [v.name for v in versions.versions("boxes")] == ["v1", "v3"]
    assert not [n for n in os.listdir(versions.tag_dir("boxes")) if n.startswith(".staging")]


def test_pin_rolls_back_every_tag_and_unpin_serves_the_newest(tmp_path):
    store = DictStore()
    versions = TrainedVersions("7", store, model_root=str(tmp_path))
    v1 = add_version(versions, "boxes")
    v2 = add_version(versions, "classes")
    v3 = add_version(versions, "boxes")

    versions.pin("yolo-v2", BASE)
    assert versions.project_version(BASE) == "yolo-v2"
    assert versions.serving("boxes") == v1 and versions.serving("classes") == v2

    versions.pin("v1", BASE)
    assert versions.serving("classes") is None, "before its first version a tag serves its own weights"

    versions.pin("yolo", BASE)
    assert versions.project_version(BASE) == "yolo" and versions.serving("boxes") is None

    add_version(versions, "boxes")  # a new version does not move a pin
    assert versions.project_version(BASE) == "yolo"

    versions.pin(None, BASE)
    assert versions.project_version(BASE) == "yolo-v4" and versions.serving("classes") == v2
    assert versions.serving("boxes").number == 4 != v3.number


@pytest.mark.parametrize("version", ["yolo-v9", "v2", "latest", "yolo-v"])
def test_pinning_an_unpublished_or_malformed_version_is_refused(tmp_path, version):
    versions = TrainedVersions("7", DictStore(), model_root=str(tmp_path))
    add_version(versions, "boxes")
    add_version(versions, "boxes", serve=False)
    with pytest.raises(ValueError, match="model_version"):
        versions.pin(version, BASE)
    assert versions.project_version(BASE) == "yolo-v1"


def test_state_survives_a_restart_with_the_sqlite_store(tmp_path):
    db = str(tmp_path / "cache.db")
    versions = TrainedVersions("7", ProjectStore(SQLiteStore(db), "7"), model_root=str(tmp_path))
    add_version(versions, "boxes")
    add_version(versions, "boxes")
    versions.pin("yolo-v1", BASE)

    restarted = TrainedVersions("7", ProjectStore(SQLiteStore(db), "7"), model_root=str(tmp_path))
    assert restarted.project_version(BASE) == "yolo-v1" and restarted.serving("boxes").name == "v1"
    other_project = TrainedVersions("8", ProjectStore(SQLiteStore(db), "8"), model_root=str(tmp_path))
    assert other_project.project_version(BASE) == "yolo" and other_project.versions() == []


def test_concurrent_publishes_get_distinct_numbers(tmp_path):
    versions = TrainedVersions("7", DictStore(), model_root=str(tmp_path))
    published = []
    threads = [threading.Thread(target=lambda i=i: published.append(add_version(versions, f"tag{i % 3}")))
               for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(v.number for v in published) == list(range(1, 9))
    assert len(versions.versions()) == 8


def test_a_failed_run_leaves_nothing_and_an_unreadable_version_is_ignored(tmp_path):
    versions = TrainedVersions("7", DictStore(), model_root=str(tmp_path))
    with pytest.raises(RuntimeError):
        with versions.staging("boxes") as staging:
            raise RuntimeError("training failed")
    assert not os.path.exists(staging)
    with pytest.raises(FileNotFoundError, match=WEIGHTS_FILE):
        with versions.staging("boxes") as staging:
            versions.publish("boxes", staging, {}, serve=True)

    broken = os.path.join(versions.tag_dir("boxes"), "v1")
    os.makedirs(broken)
    with open(os.path.join(broken, METRICS_FILE), "w") as f:
        f.write("{half")
    assert versions.versions() == []
    assert add_version(versions, "boxes").name == "v2", "an unreadable version still owns its number"
    assert add_version(versions, "classes").name == "v3"
    assert [v.name for v in versions.versions()] == ["v2", "v3"]


def test_staging_folders_of_runs_that_died_are_removed(tmp_path):
    versions = TrainedVersions("7", DictStore(), model_root=str(tmp_path))
    stale = os.path.join(versions.tag_dir("boxes"), ".staging-died")
    os.makedirs(os.path.join(stale, "train", "weights"))
    version = add_version(versions, "boxes")
    versions.remove_stale_staging("boxes")
    versions.remove_stale_staging("never-trained")
    assert sorted(os.listdir(versions.tag_dir("boxes"))) == [version.name]


def test_names_from_requests_never_leave_the_trained_folder(tmp_path):
    assert path_component("boxes") == "boxes" and path_component("42") == "42"
    for hostile in ("..", "../../etc", "a/b", ".hidden", "x" * 200, "a\0b"):
        component = path_component(hostile)
        assert "/" not in component and not component.startswith(".") and len(component) < 60
    assert path_component("a/b") != path_component("a_b")
    versions = TrainedVersions("../../x", DictStore(), model_root=str(tmp_path))
    version = add_version(versions, "../../tag")
    assert os.path.commonpath([version.path, str(tmp_path / "trained")]) == str(tmp_path / "trained")


def test_each_classifier_training_changes_the_project_version(tmp_path):
    versions = TrainedVersions("7", DictStore(), model_root=str(tmp_path))
    versions.count_classifier_training()
    assert versions.project_version(BASE) == "yolo.c1"
    add_version(versions, "boxes")
    versions.count_classifier_training()
    assert versions.project_version(BASE) == "yolo-v1.c2"
    assert versions.version_names(BASE) == ["yolo", "yolo-v1"]
    versions.pin("yolo.c2", BASE)  # the name Label Studio shows: its classifier part is not pinned
    assert versions.project_version(BASE) == "yolo.c2"
    versions.pin("yolo-v1.c1", BASE)
    assert versions.project_version(BASE) == "yolo-v1.c2"

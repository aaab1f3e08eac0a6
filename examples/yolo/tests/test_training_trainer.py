"""Real (tiny) trainings: synthetic scenes as Label Studio annotations -> dataset -> Ultralytics
training from the committed test weights -> a version with metrics.json; rejection when worse;
one run per tag at a time. Each training: ~20 scenes, imgsz <= 160, 1-2 epochs, CPU."""

import json
import os
import shutil
import subprocess
import sys
import time

import cv2
import pytest

import synthetic as syn
from training.dataset import TrainableTag, build_dataset
from training.trainer import TrainingBusy, TrainOptions, publish_decision, train_version
from training.versions import METRICS_FILE, WEIGHTS_FILE, TrainedVersions
from utils.settings import YoloSettings
from yolo_helpers import TEST_MODELS_DIR

DETECTOR = os.path.join(TEST_MODELS_DIR, "shapes-det.pt")
CLASSIFIER = os.path.join(TEST_MODELS_DIR, "shapes-cls.pt")
FAST = dict(imgsz=160, batch=8, epochs=2, patience=5, workers=0, device="cpu")


class DictStore(dict):
    def set(self, key, value):
        self[key] = value


@pytest.fixture(autouse=True)
def offline_ultralytics(tmp_path, monkeypatch):
    """Ultralytics' settings and matplotlib's cache in the test's folder, no network."""
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path / "ultralytics"))
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "matplotlib"))
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # anything written to the working directory would land here


def detection_tasks(tmp_path, n=20):
    tasks = []
    for task_id in range(1, n + 1):
        image, objects = syn.detection_scene(syn.HELDOUT_SEED_START + task_id)
        h, w = image.shape[:2]
        path = tmp_path / "media" / f"{task_id}.png"
        path.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(path), image)
        result = [{"from_name": "label", "to_name": "image", "type": "rectanglelabels",
                   "value": {"x": x1 / w * 100, "y": y1 / h * 100, "width": (x2 - x1) / w * 100,
                             "height": (y2 - y1) / h * 100, "rectanglelabels": [o["label"]]}}
                  for o in objects for x1, y1, x2, y2 in [o["xyxy"]]]
        tasks.append({"id": task_id, "data": {"image": str(path)}, "annotations": [{"id": task_id, "result": result}]})
    return tasks


def media(task):
    return task["data"]["image"]


def detection_dataset(tmp_path, labels, name="dataset"):
    return build_dataset(detection_tasks(tmp_path), TrainableTag("label", "detect", labels), media,
                         str(tmp_path / name))


def publish_weights(versions, tag, weights):
    with versions.staging(tag) as staging:
        shutil.copyfile(weights, os.path.join(staging, WEIGHTS_FILE))
        return versions.publish(tag, staging, {}, serve=True)


def test_a_training_makes_a_published_version_with_its_metrics(tmp_path):
    from ultralytics import YOLO

    labels = ("triangle", "circle", "square", "star")  # 4 classes: the 3-class head is rebuilt
    dataset = detection_dataset(tmp_path, labels)
    versions = TrainedVersions("3", DictStore(), model_root=str(tmp_path / "model_root"))
    died = os.path.join(versions.tag_dir("label"), ".staging-died")  # of a run killed before it cleaned up
    os.makedirs(os.path.join(died, "train"))
    updates = []
    started = time.monotonic()
    version = train_version(dataset, DETECTOR, versions, "label", TrainOptions(**FAST), progress=updates.append)
    duration = time.monotonic() - started

    assert duration < 120
    assert version.published and versions.serving("label") == version
    assert versions.project_version("yolo") == "yolo-v1"
    with open(os.path.join(version.path, METRICS_FILE)) as f:
        metrics = json.load(f)
    assert set(metrics["metrics"]) == {"mAP50", "mAP50-95"} and 0 <= metrics["metrics"]["mAP50-95"] <= 1
    assert metrics["train_tasks"] == 16 and metrics["val_tasks"] == 4 and metrics["skipped_tasks"] == 0
    assert metrics["starting_weights"] == "shapes-det.pt" and metrics["epochs_run"] == 2 and metrics["imgsz"] == 160
    assert metrics["ultralytics_version"] and metrics["duration_s"] > 0
    assert metrics["compared_with"] is None and metrics["decision"].startswith("published: no serving weights")
    assert YOLO(version.weights).names == dict(enumerate(labels))
    assert [(u["epoch"], u["epochs"]) for u in updates if u["stage"] == "training"][:2] == [(1, 2), (2, 2)]
    assert "metrics/mAP50-95(B)" in updates[0]["metrics"]
    assert updates[-1] == {"stage": "finished", "version": "v1", "published": True, "decision": metrics["decision"]}
    assert sorted(os.listdir(version.path)) == [METRICS_FILE, "train", "val-new", WEIGHTS_FILE]
    assert os.listdir(tmp_path) and not (tmp_path / "runs").exists(), "Ultralytics wrote outside the version"
    assert os.listdir(versions.tag_dir("label")) == ["v1"], "the dead run's staging folder is removed"


def test_matplotlib_imported_by_a_training_keeps_its_cache_out_of_home(tmp_path):
    """Ultralytics' trainer imports matplotlib (its font check), which builds a font cache under
    HOME unless MPLCONFIGDIR points elsewhere: a YOLO instance (what a training job builds first)
    points it into MODEL_DIR, and Ultralytics' settings there too."""
    home, model_dir = tmp_path / "home", tmp_path / "model_dir"
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("MPLCONFIGDIR", "YOLO_CONFIG_DIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME")}
    env.update(HOME=str(home), MODEL_DIR=str(model_dir))
    subprocess.run([sys.executable, "-c", "import model; model.YOLO(); import matplotlib.font_manager, ultralytics"],
                   env=env, check=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert list(home.iterdir()) == [], "matplotlib or Ultralytics wrote into HOME"
    assert os.listdir(model_dir / "matplotlib") and os.listdir(model_dir / "ultralytics")


def test_a_worse_run_is_kept_but_not_served_unless_keep_worse(tmp_path):
    dataset = detection_dataset(tmp_path, syn.DETECTION_CLASSES)
    versions = TrainedVersions("3", DictStore(), model_root=str(tmp_path / "model_root"))
    serving = publish_weights(versions, "label", DETECTOR)  # a good model with the same classes serves
    ruin = TrainOptions(**{**FAST, "epochs": 1}, overrides={"optimizer": "SGD", "lr0": 1.0, "warmup_epochs": 0})

    rejected = train_version(dataset, DETECTOR, versions, "label", ruin)
    assert not rejected.published and rejected.name == "v2" and os.path.isfile(rejected.weights)
    assert versions.serving("label") == serving and versions.version_names("yolo") == ["yolo", "yolo-v1"]
    metrics = rejected.metrics
    assert metrics["compared_with"] == "v1" and metrics["decision"].startswith("rejected: mAP50-95")
    assert metrics["metrics"]["mAP50-95"] < metrics["serving_metrics"]["mAP50-95"]

    kept = train_version(dataset, DETECTOR, versions, "label", TrainOptions(**{**ruin.__dict__, "keep_worse": True}))
    assert kept.published and versions.serving("label") == kept and "model_train_keep_worse" in kept.metrics["decision"]


def test_a_second_run_of_the_same_tag_fails_at_once(tmp_path):
    versions = TrainedVersions("3", DictStore(), model_root=str(tmp_path / "model_root"))
    lock = versions.tag_dir("label") + ".lock"
    os.makedirs(os.path.dirname(lock))
    holder = subprocess.Popen(  # another process (an RQ worker, a gunicorn worker) is training this tag
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
                               "print('locked', flush=True); time.sleep(60)", lock],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        with pytest.raises(TrainingBusy, match="'label' for project 3 is already running"):
            train_version(None, DETECTOR, versions, "label", TrainOptions(**FAST))
        assert time.monotonic() - started < 1
    finally:
        holder.kill()
        holder.wait()
    assert versions.versions() == []


def test_classification_training_judges_top1_against_the_starting_weights(tmp_path):
    tasks = []
    for task_id in range(1, 21):
        image, label = syn.classification_image(syn.HELDOUT_SEED_START + task_id, width=96, height=96)
        path = tmp_path / f"{task_id}.png"
        cv2.imwrite(str(path), image)
        result = [{"from_name": "shape", "to_name": "image", "type": "choices", "value": {"choices": [label]}}]
        tasks.append({"id": task_id, "data": {"image": str(path)}, "annotations": [{"result": result}]})
    labels = ("triangle", "circle", "square")  # config order; Ultralytics names class folders sorted
    dataset = build_dataset(tasks, TrainableTag("shape", "classify", labels), media, str(tmp_path / "dataset"))
    versions = TrainedVersions("3", DictStore(), model_root=str(tmp_path / "model_root"))

    version = train_version(dataset, CLASSIFIER, versions, "shape", TrainOptions(**{**FAST, "imgsz": 64}))

    metrics = version.metrics
    assert metrics["metric"] == "top1" and metrics["compared_with"] == "shapes-cls.pt"
    assert version.published == (metrics["metrics"]["top1"] >= metrics["serving_metrics"]["top1"])
    assert metrics["classes"] == ["circle", "square", "triangle"]


def test_publish_decision():
    assert publish_decision("top1", 0.5, None, False)[0]
    assert publish_decision("top1", 0.5, 0.5, False) == (True, "published: top1 0.5000 >= 0.5000 of the serving weights")
    assert publish_decision("top1", 0.4, 0.5, False)[0] is False
    assert publish_decision("top1", 0.4, 0.5, True)[0] is True


def test_options_come_from_the_settings_then_the_tag():
    settings = YoloSettings.from_env({"TRAIN_EPOCHS": "7", "TRAIN_IMGSZ": "320", "DEVICE": "cpu"})
    options = TrainOptions.from_settings(settings, epochs=3, batch=None, keep_worse=True)
    assert (options.epochs, options.imgsz, options.batch, options.keep_worse) == (3, 320, 16, True)
    assert options.device == "cpu"
    assert TrainOptions.from_settings(YoloSettings()).imgsz is None

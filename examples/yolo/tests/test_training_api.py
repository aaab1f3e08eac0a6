"""Start Training through the backend's HTTP API: a fake Label Studio serves the project's annotated
tasks the way label-studio-sdk lists them; the training runs on a thread of the backend (no
BACKGROUND_JOBS), `/jobs/<id>` shows it, the new version serves that project only, `/versions` lists
it, Connect Model's extra params pin an older one. Trainings are tiny: 12 synthetic scenes,
imgsz 160, 2 epochs, CPU."""

import os
import time

import cv2
import pytest
import requests

import synthetic as syn
from fake_label_studio import LEGACY_TOKEN
from helpers import wait_until
from test_jobs import fake_ls  # noqa: F401  (a fixture)
from test_training_dataset import keypoints_with_boxes, make_tasks, rectangle, rotated_rectangle
from training_scenes import brushes, choices, polygons

N_TASKS = 12
IMAGE = '<Image name="image" value="$image"/>'


def labels_xml(labels):
    return "".join(f'<Label value="{label}"/>' for label in labels)


def config(tag: str) -> str:
    return f"<View>{IMAGE}{tag}</View>"


TRAINABLE = 'model_trainable="true" model_train_min_tasks="4"'
DETECT_LABELS = ("triangle", "circle", "square")  # not the starting weights' order: the head is rebuilt
DETECT_CONFIG = config(f'<RectangleLabels name="label" toName="image" model_path="shapes-det.pt" {TRAINABLE}>'
                       f'{labels_xml(DETECT_LABELS)}</RectangleLabels>')


@pytest.fixture
def backend_settings(backend_settings, fake_ls):
    """Label Studio known: the annotated tasks are read from the fake one."""
    return backend_settings.replace(label_studio_url=fake_ls[0], label_studio_api_key=LEGACY_TOKEN)


@pytest.fixture
def yolo_settings(yolo_settings, model_root, tmp_path):
    """A MODEL_ROOT of this test (trained versions land there), tiny trainings on the CPU."""
    own_root = tmp_path / "model_root"
    own_root.mkdir()
    for name in os.listdir(model_root):
        os.symlink(os.path.join(model_root, name), own_root / name)
    return yolo_settings.replace(model_root=str(own_root), train_epochs=2, train_imgsz=160, train_batch=8,
                                 train_workers=0, device="cpu")


@pytest.fixture
def training_env(fake_ls, tmp_path, monkeypatch):
    """Ultralytics offline, and nothing it writes outside the test's folder; the fake Label
    Studio's state."""
    for key, value in {"YOLO_OFFLINE": "1", "MPLCONFIGDIR": str(tmp_path / "matplotlib"),
                       "YOLO_CONFIG_DIR": str(tmp_path / "ultralytics")}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)  # anything written to the working directory would land here
    return fake_ls[1]


def add_tasks(state, project: int, tasks):
    for task in tasks:
        state["tasks"][task["id"]] = dict(task, project=project)


class Backend:
    def __init__(self, base):
        self.base = base

    def setup(self, project, label_config, **extra):
        response = requests.post(self.base + "/setup", json={"project": str(project), "schema": label_config, **extra})
        assert response.status_code == 200, response.text
        return response.json()["model_version"]

    def train(self, project, label_config):
        started = time.monotonic()
        response = requests.post(self.base + "/train", json={"project": {"id": project, "label_config": label_config}})
        assert response.status_code == 201, response.text
        assert time.monotonic() - started < 1.0, "START_TRAINING must answer at once"
        return response.json()["result"]

    def job(self, job_id):
        response = requests.get(f"{self.base}/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def finished(self, job_id, timeout=240):
        """The job's final status ("finished" or "failed")."""
        return wait_until(lambda: (s := self.job(job_id))["status"] in ("finished", "failed") and s, timeout=timeout,
                          interval=0.5, what=f"job {job_id}")

    def versions(self, project):
        return requests.get(self.base + "/versions", params={"project": str(project)}).json()["versions"]

    def predict(self, project, tasks, label_config=None):
        body = {"tasks": tasks, "project": str(project)}
        if label_config:
            body["label_config"] = label_config
        response = requests.post(self.base + "/predict", json=body)
        assert response.status_code == 200, response.text
        return response.json()["results"]


@pytest.fixture
def backend(training_env, yolo_server):
    return Backend(yolo_server)


def heldout_task(tmp_path, scene, seed=77):
    image, _ = scene(syn.HELDOUT_SEED_START + 1000 + seed)
    path = tmp_path / f"heldout-{seed}.png"
    cv2.imwrite(str(path), image)
    return {"id": 10_000 + seed, "data": {"image": str(path)}}


def test_start_training_serves_a_new_version_to_its_project_only_and_pins_roll_it_back(backend, training_env, tmp_path):
    tasks, _ = make_tasks(tmp_path, syn.detection_scene, lambda objects: [rectangle(o) for o in objects], n=N_TASKS)
    add_tasks(training_env, 1, tasks)
    assert backend.setup(1, DETECT_CONFIG) == "yolo" and backend.versions(1) == ["yolo"]

    answer = backend.train(1, DETECT_CONFIG)
    assert answer["status"] == "queued" and answer["jobs"] == {"label": {"job_id": answer["job_id"], "status": "queued"}}
    again = backend.train(1, DETECT_CONFIG)  # while the first one runs
    assert again["status"] == "running" and again["job_id"] == answer["job_id"]
    status = backend.finished(answer["job_id"])

    assert status["status"] == "finished", status.get("error")
    result = status["result"]
    assert result["published"] is True and result["version"] == "v1" and result["tag"] == "label"
    assert result["classes"] == list(DETECT_LABELS)
    assert result["train_tasks"] + result["val_tasks"] == N_TASKS and result["skipped_tasks"] == 0
    assert status["progress"]["stage"] == "finished" and status["progress"]["epoch"] == status["progress"]["epochs"] == 2
    assert set(status["progress"]["metrics"]) >= {"metrics/mAP50(B)", "metrics/mAP50-95(B)"}

    assert backend.versions(1) == ["yolo", "yolo-v1"]
    assert backend.setup(1, DETECT_CONFIG) == "yolo-v1"
    (prediction,) = backend.predict(1, [heldout_task(tmp_path, syn.detection_scene)])
    assert prediction["model_version"] == "yolo-v1"
    assert all(r["value"]["rectanglelabels"][0] in DETECT_LABELS for r in prediction["result"])
    assert any(name.startswith("weights.pt@") for name in requests.get(backend.base + "/health").json()["loaded_models"])
    # another project with the same config keeps the tag's own weights
    assert backend.setup(2, DETECT_CONFIG) == "yolo" and backend.versions(2) == ["yolo"]

    # rollback through Connect Model's extra params; a version that does not exist changes nothing
    assert backend.setup(1, DETECT_CONFIG, extra_params={"model_version": "yolo"}) == "yolo"
    assert backend.predict(1, [heldout_task(tmp_path, syn.detection_scene)])[0]["model_version"] == "yolo"
    assert backend.setup(1, DETECT_CONFIG, extra_params={"model_version": "yolo-v7"}) == "yolo"
    assert backend.setup(1, DETECT_CONFIG, extra_params={"model_version": ""}) == "yolo-v1"
    assert backend.versions(1) == ["yolo", "yolo-v1"]
    assert backend.setup(1, DETECT_CONFIG, extra_params={"model_version": "yolo"}) == "yolo"
    assert backend.setup(1, DETECT_CONFIG) == "yolo-v1", "clearing the extra params unpins"


KEEP = 'model_train_keep_worse="true"'  # 2 epochs may not beat well-trained starting weights: serve anyway
POSE_LABELS = "".join(f'<Label value="{name}" model_index="{i}" predicted_values="card"/>'
                      for i, name in enumerate(syn.POSE_KEYPOINTS))
KINDS = {
    "classify": (syn.classification_image, choices, config(
        f'<Choices name="class" toName="image" model_path="shapes-cls.pt" {TRAINABLE} {KEEP}>'
        + "".join(f'<Choice value="{c}"/>' for c in syn.CLASSIFICATION_CLASSES) + "</Choices>"), "choices"),
    "polygon": (syn.segmentation_scene, polygons, config(
        f'<PolygonLabels name="poly" toName="image" model_path="shapes-seg.pt" {TRAINABLE} {KEEP}>'
        f'{labels_xml(syn.SEGMENTATION_CLASSES)}</PolygonLabels>'), "polygonlabels"),
    "brush": (syn.segmentation_scene, brushes, config(
        f'<BrushLabels name="brush" toName="image" model_path="shapes-seg.pt" {TRAINABLE} {KEEP}>'
        f'{labels_xml(syn.SEGMENTATION_CLASSES)}</BrushLabels>'), "brushlabels"),
    "obb": (syn.obb_scene, lambda objects: [rotated_rectangle(o) for o in objects], config(
        f'<RectangleLabels name="label" toName="image" model_obb="true" model_path="shapes-obb.pt" {TRAINABLE} '
        f'{KEEP}>{labels_xml(syn.OBB_CLASSES)}</RectangleLabels>'), "rectanglelabels"),
    "pose": (syn.pose_scene, keypoints_with_boxes, config(
        f'<RectangleLabels name="kp_bbox" toName="image" model_skip="true"><Label value="card"/></RectangleLabels>'
        f'<KeyPointLabels name="kp" toName="image" model_path="shapes-pose.pt" {TRAINABLE} {KEEP}>{POSE_LABELS}'
        f'</KeyPointLabels>'), "keypointlabels"),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_trainable_tag_kind_trains_and_serves_its_version(backend, training_env, tmp_path, kind):
    scene, to_result, label_config, region_type = KINDS[kind]
    tasks, _ = make_tasks(tmp_path, scene, to_result, n=N_TASKS)
    add_tasks(training_env, 3, tasks)
    backend.setup(3, label_config)
    status = backend.finished(backend.train(3, label_config)["job_id"])

    assert status["status"] == "finished", status.get("error")
    assert status["result"]["published"] is True and status["result"]["train_tasks"] + status["result"]["val_tasks"] == N_TASKS
    assert backend.versions(3) == ["yolo", "yolo-v1"]
    (prediction,) = backend.predict(3, [heldout_task(tmp_path, scene)])
    assert prediction["model_version"] == "yolo-v1" and "error" not in prediction, prediction
    assert {r["type"] for r in prediction["result"]} >= {region_type}


def test_min_tasks_missing_media_and_a_tag_without_annotations_are_reported(backend, training_env, tmp_path):
    tasks, _ = make_tasks(tmp_path, syn.detection_scene, lambda objects: [rectangle(o) for o in objects], n=6)
    tasks[0]["data"]["image"] = "/data/upload/1/missing-1.png"  # Label Studio answers 404
    tasks[1]["data"]["image"] = str(tmp_path / "deleted.png")
    add_tasks(training_env, 4, tasks)
    status = backend.finished(backend.train(4, DETECT_CONFIG)["job_id"])
    assert status["status"] == "finished", status.get("error")
    assert status["result"]["skipped_tasks"] == 2 and set(status["result"]["skipped"]) == {"1", "2"}
    assert status["result"]["train_tasks"] + status["result"]["val_tasks"] == 4

    more = DETECT_CONFIG.replace('model_train_min_tasks="4"', 'model_train_min_tasks="50"')
    status = backend.finished(backend.train(4, more)["job_id"])
    assert status["status"] == "failed" and "4 usable annotated tasks, 50 are needed" in status["error"]
    assert backend.versions(4) == ["yolo", "yolo-v1"]

    other_tag = DETECT_CONFIG.replace('name="label"', 'name="other"')  # no annotation has its regions
    status = backend.finished(backend.train(4, other_tag)["job_id"])
    assert status["status"] == "failed" and "'other' has 0 usable annotated tasks" in status["error"]


def test_without_label_studio_credentials_the_job_fails_saying_what_to_set(training_env, serve_yolo,
                                                                          backend_settings):
    with serve_yolo(settings=backend_settings.replace(label_studio_api_key="")) as base:
        backend = Backend(base)
        answer = backend.train(5, DETECT_CONFIG)
        status = backend.finished(answer["job_id"], timeout=30)
    assert status["status"] == "failed" and "LABEL_STUDIO_API_KEY" in status["error"]


def test_a_rejected_run_is_kept_not_served_unless_keep_worse(backend, training_env, tmp_path, monkeypatch):
    """The serving weights are made to look better than the new ones on the validation split."""
    import training.trainer as trainer

    decide = trainer.publish_decision
    monkeypatch.setattr(trainer, "publish_decision",
                        lambda metric, new, serving, keep_worse: decide(metric, new, new + 0.1, keep_worse))
    tasks, _ = make_tasks(tmp_path, syn.detection_scene, lambda objects: [rectangle(o) for o in objects], n=N_TASKS)
    add_tasks(training_env, 6, tasks)

    status = backend.finished(backend.train(6, DETECT_CONFIG)["job_id"])
    assert status["status"] == "finished" and status["result"]["published"] is False
    assert status["result"]["decision"].startswith("rejected")
    assert backend.versions(6) == ["yolo"] and backend.setup(6, DETECT_CONFIG) == "yolo"

    keep = DETECT_CONFIG.replace(TRAINABLE, TRAINABLE + " " + KEEP)
    status = backend.finished(backend.train(6, keep)["job_id"])
    assert status["result"]["published"] is True and status["result"]["version"] == "v2"
    assert backend.versions(6) == ["yolo", "yolo-v2"] and backend.setup(6, keep) == "yolo-v2"


def annotation_event(label_config, result, was_cancelled=False):
    return {"action": "ANNOTATION_CREATED", "project": {"id": 7, "label_config": label_config},
            "task": {"id": 1, "data": {"image": "x.png"}},
            "annotation": {"id": 1, "task": 1, "result": result, "was_cancelled": was_cancelled}}


def test_model_train_every_starts_a_training_after_n_annotations_of_the_tag(backend, training_env):
    every = DETECT_CONFIG.replace(TRAINABLE, 'model_trainable="true" model_train_every="2"')
    box = [{"from_name": "label", "to_name": "image", "type": "rectanglelabels",
            "value": {"x": 1, "y": 1, "width": 5, "height": 5, "rectanglelabels": ["circle"]}}]

    def send(result, **kwargs):
        response = requests.post(backend.base + "/webhook", json=annotation_event(every, result, **kwargs))
        assert response.status_code == 201, response.text
        return response.json()["result"]

    assert send(box) == {"status": "skipped", "reason": "no training due"}
    assert send([]) == {"status": "skipped", "reason": "no training due"}  # no region of the tag: not counted
    assert send(box, was_cancelled=True)["status"] == "skipped"
    started = send(box)
    assert started["status"] == "queued" and started["jobs"]["label"]["job_id"] == started["job_id"]
    assert send(box)["status"] == "skipped"  # counting starts again
    status = backend.finished(started["job_id"], timeout=30)
    assert status["status"] == "failed" and "0 usable annotated tasks" in status["error"]  # project 7 has none


@pytest.mark.parametrize("name, expected", [("mean", 0.5), ("min", 0.2), ("max", 0.8)])
def test_prediction_score_is_the_mean_min_or_max_of_the_regions(name, expected):
    from model import prediction_score

    assert prediction_score([0.2, 0.5, 0.8], name) == pytest.approx(expected)
    assert prediction_score([], name) == 0.0


def test_an_unknown_prediction_score_is_refused_when_the_settings_are_read():
    from utils.settings import YoloSettings

    assert YoloSettings.from_env({"PREDICTION_SCORE": " Min "}).prediction_score == "min"
    with pytest.raises(ValueError, match="PREDICTION_SCORE must be one of mean, min, max, not 'bogus'"):
        YoloSettings.from_env({"PREDICTION_SCORE": "bogus"})

"""Which weights serve a request and the `model_version` it answers: read once per request."""

import os
import shutil

import cv2
import pytest

import synthetic
from training.versions import WEIGHTS_FILE, TrainedVersions
from utils.inference import registry
from yolo_helpers import TEST_MODELS_DIR, use_model_root_of

SEG_WEIGHTS = "shapes-seg.pt"
CONFIG = ('<View><Image name="image" value="$image"/>'
          f'<PolygonLabels name="seg" toName="image" model_path="{SEG_WEIGHTS}" model_trainable="true" smart="true">'
          '<Label value="circle"/><Label value="square"/><Label value="triangle"/></PolygonLabels></View>')


@pytest.fixture
def own_model_root(yolo_env, tmp_path, monkeypatch):
    """A MODEL_ROOT of this test only (trained versions are written into it)."""
    return use_model_root_of(tmp_path, monkeypatch, "model_root", os.path.join(TEST_MODELS_DIR, SEG_WEIGHTS))


@pytest.fixture
def loaded_paths(monkeypatch):
    """The weights paths the registry is asked for, in order."""
    paths = []
    get = registry.get

    def spy(path, *args, **kwargs):
        paths.append(path)
        return get(path, *args, **kwargs)

    monkeypatch.setattr(registry, "get", spy)
    return paths


def publish_copy_of_own_weights(project, store, root) -> str:
    versions = TrainedVersions(project, store)
    with versions.staging("seg") as staging:
        shutil.copyfile(os.path.join(root, SEG_WEIGHTS), os.path.join(staging, WEIGHTS_FILE))
        return versions.publish("seg", staging, {}, serve=True).weights


def click_at_center():
    region = {"type": "keypointlabels", "from_name": "seg", "to_name": "image", "original_width": 320,
              "original_height": 240, "is_positive": True, "value": {"x": 50, "y": 50, "keypointlabels": ["circle"]}}
    return {"result": [region]}


def test_a_version_published_during_a_request_serves_from_the_next_one(own_model_root, loaded_paths, tmp_path):
    from model import YOLO

    image, _ = synthetic.segmentation_scene(7)
    cv2.imwrite(str(tmp_path / "scene.png"), image)
    tasks = [{"id": 1, "data": {"image": str(tmp_path / "scene.png")}}]
    request = YOLO(project_id="9", label_config=CONFIG)
    assert request.model_version == "yolo"

    trained = publish_copy_of_own_weights("9", request, own_model_root)  # while the request runs
    assert request.model_version == "yolo", "one request answers one version"
    assert {p["model_version"] for p in request.predict(tasks)} == {"yolo"}
    assert {p["model_version"] for p in request.predict(tasks, context=click_at_center())} == {"yolo"}
    assert set(loaded_paths) == {str(own_model_root / SEG_WEIGHTS)}, "weights of the version it answers"

    loaded_paths.clear()
    next_request = YOLO(project_id="9", label_config=CONFIG)
    assert {p["model_version"] for p in next_request.predict(tasks)} == {"yolo-v1"}
    (smart_tool,) = next_request.predict(tasks, context=click_at_center())
    assert smart_tool["model_version"] == "yolo-v1" and "error" not in smart_tool, smart_tool
    assert set(loaded_paths) == {trained}, "batch and smart-tool predictions both serve the trained weights"


def test_a_training_job_loads_its_published_version_and_what_it_replaced_is_released(
        own_model_root, loaded_paths, tmp_path, monkeypatch):
    from control_models import control_models_for
    from label_studio_ml.label_config import get_label_interface
    from model import YOLO
    from training.job import take_over
    from utils.runtimes import export_key, exports_dir

    monkeypatch.setenv("YOLO_RUNTIME", "onnx")  # one export per weights file
    image, _ = synthetic.segmentation_scene(7)
    cv2.imwrite(str(tmp_path / "scene.png"), image)
    tasks = [{"id": 1, "data": {"image": str(tmp_path / "scene.png")}}]

    def exports_of(weights):
        return [n for n in os.listdir(exports_dir()) if n.startswith(export_key(weights) + "-")]

    def held(weights):
        return any(key[0] == weights for key in registry._models)

    first = publish_copy_of_own_weights("9", YOLO(project_id="9", label_config=CONFIG), own_model_root)
    YOLO(project_id="9", label_config=CONFIG).predict(tasks)
    assert held(first) and exports_of(first)

    store = YOLO(project_id="9", label_config=CONFIG)
    second = publish_copy_of_own_weights("9", store, own_model_root)
    (control,) = control_models_for(get_label_interface(CONFIG))
    take_over(TrainedVersions("9", store), control, TrainedVersions("9", store).serving("seg"))
    assert held(second) and exports_of(second), "the job loaded (and exported) the version it published"
    assert exports_of(first) == [], "the replaced version's exports are removed"

    loaded_paths.clear()
    (prediction,) = YOLO(project_id="9", label_config=CONFIG).predict(tasks)
    assert prediction["model_version"] == "yolo-v2" and loaded_paths == [second]
    assert not held(first), "the replaced version is released from memory"

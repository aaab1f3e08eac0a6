"""Which weights serve a request and the `model_version` it answers: read once per request."""

import os
import shutil

import cv2
import pytest

import synthetic
from training.versions import WEIGHTS_FILE
from utils.runtimes import export_key
from utils.inference import registry
from yolo_helpers import TEST_MODELS_DIR, model_root_of

SEG_WEIGHTS = "shapes-seg.pt"
CONFIG = ('<View><Image name="image" value="$image"/>'
          f'<PolygonLabels name="seg" toName="image" model_path="{SEG_WEIGHTS}" model_trainable="true" smart="true">'
          '<Label value="circle"/><Label value="square"/><Label value="triangle"/></PolygonLabels></View>')


@pytest.fixture
def own_model_root(tmp_path):
    """A MODEL_ROOT of this test only (trained versions are written into it)."""
    return model_root_of(tmp_path, "model_root", os.path.join(TEST_MODELS_DIR, SEG_WEIGHTS))


@pytest.fixture
def yolo_settings(yolo_settings, own_model_root):
    return yolo_settings.replace(model_root=str(own_model_root))


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


def publish_copy_of_own_weights(backend, root) -> str:
    """A copy of the tag's own weights published as the next version of the backend's project."""
    versions = backend.trained_versions
    with versions.staging("seg") as staging:
        shutil.copyfile(os.path.join(root, SEG_WEIGHTS), os.path.join(staging, WEIGHTS_FILE))
        return versions.publish("seg", staging, {}, serve=True).weights


def click_at_center():
    region = {"type": "keypointlabels", "from_name": "seg", "to_name": "image", "original_width": 320,
              "original_height": 240, "is_positive": True, "value": {"x": 50, "y": 50, "keypointlabels": ["circle"]}}
    return {"result": [region]}


def test_a_version_published_during_a_request_serves_from_the_next_one(own_model_root, new_backend, loaded_paths,
                                                                       tmp_path):
    image, _ = synthetic.segmentation_scene(7)
    cv2.imwrite(str(tmp_path / "scene.png"), image)
    tasks = [{"id": 1, "data": {"image": str(tmp_path / "scene.png")}}]
    request = new_backend("9", CONFIG)
    assert request.model_version == "yolo"

    trained = publish_copy_of_own_weights(new_backend("9", CONFIG), own_model_root)  # while the request runs
    assert request.model_version == "yolo", "one request answers one version"
    assert {p["model_version"] for p in request.predict(tasks)} == {"yolo"}
    assert {p["model_version"] for p in request.predict(tasks, context=click_at_center())} == {"yolo"}
    assert set(loaded_paths) == {str(own_model_root / SEG_WEIGHTS)}, "weights of the version it answers"

    loaded_paths.clear()
    next_request = new_backend("9", CONFIG)
    assert {p["model_version"] for p in next_request.predict(tasks)} == {"yolo-v1"}
    (smart_tool,) = next_request.predict(tasks, context=click_at_center())
    assert smart_tool["model_version"] == "yolo-v1" and "error" not in smart_tool, smart_tool
    assert set(loaded_paths) == {trained}, "batch and smart-tool predictions both serve the trained weights"


def test_a_training_job_loads_its_published_version_and_what_it_replaced_is_released(
        own_model_root, new_backend, yolo_settings, loaded_paths, tmp_path):
    from training.job import take_over

    onnx = yolo_settings.replace(yolo_runtime="onnx")  # one export per weights file
    image, _ = synthetic.segmentation_scene(7)
    cv2.imwrite(str(tmp_path / "scene.png"), image)
    tasks = [{"id": 1, "data": {"image": str(tmp_path / "scene.png")}}]

    def exports_of(weights):
        exports = new_backend("9", CONFIG, yolo=onnx).context.inference.exports_dir
        return [n for n in os.listdir(exports) if n.startswith(export_key(weights) + "-")]

    def held(weights):
        return any(key[0] == weights for key in registry._models)

    first = publish_copy_of_own_weights(new_backend("9", CONFIG, yolo=onnx), own_model_root)
    new_backend("9", CONFIG, yolo=onnx).predict(tasks)
    assert held(first) and exports_of(first)

    job = new_backend("9", CONFIG, yolo=onnx)  # the training job's instance, which builds the tag's control model
    second = publish_copy_of_own_weights(job, own_model_root)
    (control,) = job.control_models()
    take_over(job.trained_versions, control, job.trained_versions.serving("seg"))
    assert held(second) and exports_of(second), "the job loaded (and exported) the version it published"
    assert exports_of(first) == [], "the replaced version's exports are removed"

    loaded_paths.clear()
    (prediction,) = new_backend("9", CONFIG, yolo=onnx).predict(tasks)
    assert prediction["model_version"] == "yolo-v2" and loaded_paths == [second]
    assert not held(first), "the replaced version is released from memory"

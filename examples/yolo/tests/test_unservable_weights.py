"""Issue #16.6 and #15.4 in the YOLO backend: a `model_path` that names no weights is a 400 listing
the weights that are there, and official weights that cannot be downloaded are a 424 in our words,
listing them too."""

import pytest
import requests

from label_studio_ml.exceptions import FailedDependency, LabelConfigError

CONFIG = ('<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image" '
          'model_path="{}"><Label value="circle"/></RectangleLabels></View>')


@pytest.fixture
def small_root(tmp_path):
    """A MODEL_ROOT holding one weights file and files of other kinds (OpenVINO, a tracker YAML)."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "mine.pt").write_bytes(b"not really weights")
    for name in ("model.xml", "model.bin", "botsort.yaml"):
        (root / name).write_text("<net/>")
    return root


@pytest.fixture
def yolo_settings(yolo_settings, small_root):
    return yolo_settings.replace(model_root=str(small_root))


@pytest.mark.parametrize("name", ["model.xml", "model.bin", "botsort.yaml"])
def test_a_model_path_naming_no_weights_is_a_400_listing_the_weights(small_root, name):
    from utils.weights import resolve_model_path

    with pytest.raises(LabelConfigError, match=r"not a weights file.*available: mine\.pt$"):
        resolve_model_path(name, str(small_root))


def test_official_weights_offline_are_a_424_in_our_words_listing_the_weights(small_root, monkeypatch):
    import ultralytics
    from utils.inference import LoadedModel
    from utils.weights import resolve_model_path

    def offline(path, *args, **kwargs):
        raise ConnectionError("❌ Download failure for https://github.com/ultralytics/assets/releases/yolo11n.pt")

    monkeypatch.setattr(ultralytics, "YOLO", offline)
    with pytest.raises(FailedDependency) as caught:
        LoadedModel._load_weights(resolve_model_path("yolo11n.pt", str(small_root)))
    detail = caught.value.detail
    assert "yolo11n.pt is not in MODEL_ROOT" in detail and detail.endswith("available: mine.pt")
    assert "❌" not in detail and "github" not in detail


def test_a_model_path_naming_no_weights_answers_400_over_http(yolo_server, small_root):
    response = requests.post(yolo_server + "/predict", json={
        "tasks": [{"id": 1, "data": {"image": "/nowhere.png"}}], "project": "1",
        "label_config": CONFIG.format("model.xml")}, timeout=60)
    assert response.status_code == 400 and "not a weights file" in response.json()["detail"]
    assert "available: mine.pt" in response.json()["detail"]

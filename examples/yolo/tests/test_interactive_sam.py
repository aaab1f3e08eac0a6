"""Smart tools with the Segment Anything engine, through the YOLO backend's HTTP API.

The SAM checkpoint is MobileSAM's architecture with random weights (`sam_test_model.py`), loaded
the way a real `mobile_sam.pt` is: the tests check loading, prompts, the answer and the
image-embedding cache, not segmentation quality (see test_interactive.py for that).
"""

import numpy as np
import pytest
import requests
from ultralytics.models.sam.predict import Predictor

import synthetic
from interactive.sam import embeddings
from sam_test_model import SAM_TEST_MODEL, sam_test_model
from test_interactive import LABELS, PROMPT_TAGS, click, drag, interactive
from utils.inference import InferenceOptions, registry
from utils.weights import resolve_model_path
from yolo_helpers import brush_region_mask, model_root_of, save_image

CONFIG = (f'<View><Image name="image" value="$image"/>{PROMPT_TAGS}'
          f'<BrushLabels name="brushlabels" toName="image" model_path="{SAM_TEST_MODEL}">{LABELS}</BrushLabels>'
          f'<PolygonLabels name="polygonlabels" toName="image" model_path="{SAM_TEST_MODEL}">{LABELS}</PolygonLabels>'
          '</View>')


@pytest.fixture
def yolo_settings(yolo_settings, tmp_path):
    """A MODEL_ROOT holding the SAM checkpoint."""
    return yolo_settings.replace(model_root=str(model_root_of(tmp_path, "sam_models", sam_test_model())))


@pytest.fixture
def sam_server(yolo_server):
    """The backend with the SAM checkpoint; an empty embedding cache."""
    embeddings.clear()
    yield yolo_server
    embeddings.clear()


@pytest.fixture
def scene(images_dir):
    image, objects = synthetic.segmentation_scene(synthetic.HELDOUT_SEED_START)
    return save_image(image, str(images_dir / "scene.png")), (image.shape[1], image.shape[0]), objects


@pytest.fixture
def decoder_calls(monkeypatch):
    """The prompts every SAM decoder call received, in pixels: [(points, labels, bboxes)]."""
    calls = []
    original = Predictor.inference_features

    def recording(self, features, src_shape, dst_shape=None, bboxes=None, points=None, labels=None, **kwargs):
        calls.append(tuple(None if v is None else np.asarray(v).tolist() for v in (points, labels, bboxes)))
        return original(self, features, src_shape, dst_shape, bboxes, points, labels, **kwargs)

    monkeypatch.setattr(Predictor, "inference_features", recording)
    return calls


def encoder_runs(yolo_settings, backend_settings):
    """A counter of the image encoder's forward passes on the SAM model the backend loaded."""
    options = InferenceOptions.from_settings(yolo_settings, backend_settings)
    sam = registry.get(resolve_model_path(SAM_TEST_MODEL, yolo_settings.model_root), options, pytorch=True)
    runs = []
    handle = sam.model.model.image_encoder.register_forward_hook(lambda *args: runs.append(1))
    return runs, handle


def test_sam_weights_load_and_answer_brush_and_polygon_of_the_prompted_label(sam_server, scene, decoder_calls):
    path, size, objects = scene
    prediction = interactive(sam_server, CONFIG, path, [click(objects[0]["center"], size, label="Mine")])
    assert sorted(r["type"] for r in prediction["result"]) == ["brushlabels", "polygonlabels"]
    for region in prediction["result"]:
        assert region["to_name"] == "image" and region["value"][region["type"]] == ["Mine"]
        assert 0 <= region["score"] <= 1.5  # SAM's predicted IoU
    brush = next(r for r in prediction["result"] if r["type"] == "brushlabels")
    assert brush_region_mask(brush["value"], *size).any()
    polygon = next(r for r in prediction["result"] if r["type"] == "polygonlabels")
    assert polygon["value"]["closed"] and all(0 <= v <= 100 for p in polygon["value"]["points"] for v in p)
    loaded = requests.get(sam_server + "/health", timeout=10).json()["loaded_models"]
    assert f"{SAM_TEST_MODEL}@cpu/torch" in loaded  # SAM stays on PyTorch


def test_positive_and_negative_points_and_a_box_reach_sam_as_one_object(sam_server, scene, decoder_calls):
    path, size, objects = scene
    (x1, y1), (x2, y2), box = objects[0]["center"], objects[-1]["center"], (10, 20, 200, 180)
    interactive(sam_server, CONFIG.replace("<PolygonLabels", "<PolygonLabels model_skip='true'"), path,
                [click((x1, y1), size), click((x2, y2), size, positive=False), drag(box, size)])
    (points, labels, bboxes) = decoder_calls[-1]
    assert np.allclose(points, [[[x1, y1], [x2, y2]]]) and labels == [[1, 0]]  # one object, Alt-click = 0
    assert np.allclose(bboxes, [box])


def test_only_negative_points_answer_nothing_without_running_sam(sam_server, scene, decoder_calls):
    path, size, objects = scene
    prediction = interactive(sam_server, CONFIG, path, [click(objects[0]["center"], size, positive=False)])
    assert prediction["result"] == [] and decoder_calls == []


def test_the_image_is_encoded_once_for_several_clicks(sam_server, scene, images_dir, decoder_calls, yolo_settings,
                                                     backend_settings):
    path, size, objects = scene
    runs, handle = encoder_runs(yolo_settings, backend_settings)
    try:
        for obj in objects:
            interactive(sam_server, CONFIG, path, [click(obj["center"], size)])
        interactive(sam_server, CONFIG, path, [click(objects[0]["center"], size), click((5, 5), size, positive=False)])
        assert len(runs) == 1 and len(decoder_calls) == 2 * (len(objects) + 1)  # two output tags per click
        # the same picture under another name shares the embedding; another picture is encoded
        copy = save_image(synthetic.segmentation_scene(synthetic.HELDOUT_SEED_START)[0], str(images_dir / "copy.png"))
        interactive(sam_server, CONFIG, copy, [click(objects[0]["center"], size)])
        assert len(runs) == 1
        other_image, other_objects = synthetic.segmentation_scene(synthetic.HELDOUT_SEED_START + 1)
        other = save_image(other_image, str(images_dir / "other.png"))
        interactive(sam_server, CONFIG, other, [click(other_objects[0]["center"], size)])
        assert len(runs) == 2
    finally:
        handle.remove()


def test_batch_prediction_skips_sam_output_tags(sam_server, scene):
    path, _, _ = scene
    response = requests.post(sam_server + "/predict", timeout=60, json={
        "tasks": [{"id": 1, "data": {"image": path}}], "label_config": CONFIG, "params": {}})
    assert response.status_code == 200, response.text
    assert response.json()["results"] == [{"result": [], "score": 0.0, "model_version": "yolo"}]

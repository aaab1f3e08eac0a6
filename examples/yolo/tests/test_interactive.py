"""Smart tools over HTTP with the YOLO-seg engine: clicks and boxes on synthetic scenes with known
objects, answered as Label Studio 1.23.2 asks (`ls_wire_samples/POST_predict_interactive.json`)."""

import copy
import json

import numpy as np
import pytest
import requests

import synthetic
from test_interactive_prompts import WIRE_SAMPLE
from yolo_helpers import brush_region_mask, mask_iou, polygon_region_mask, save_image

LABELS = "".join(f'<Label value="{name}"/>' for name in synthetic.SEGMENTATION_CLASSES)
PROMPT_TAGS = (f'<KeyPointLabels name="kp" toName="image" smart="true">{LABELS}</KeyPointLabels>'
               f'<RectangleLabels name="box" toName="image" smartOnly="true">{LABELS}</RectangleLabels>')
# Scenes of two or three objects the test model segments (seeds the model never saw).
SEEDS = [seed for seed in range(synthetic.HELDOUT_SEED_START, synthetic.HELDOUT_SEED_START + 12)
         if len(synthetic.segmentation_scene(seed)[1]) >= 2][:4]


def config(outputs=("BrushLabels",), model_path="shapes-seg.pt"):
    tags = "".join(f'<{tag} name="{tag.lower()}" toName="image" model_path="{model_path}">{LABELS}</{tag}>'
                   for tag in outputs)
    return f'<View><Image name="image" value="$image"/>{PROMPT_TAGS}{tags}</View>'


def click(xy, size, label="Shape", positive=True):
    width, height = size
    return {"id": "p", "type": "keypointlabels", "from_name": "kp", "to_name": "image", "original_width": width,
            "original_height": height, "image_rotation": 0, "is_positive": positive, "origin": "manual",
            "value": {"x": xy[0] / width * 100, "y": xy[1] / height * 100, "width": 0.5, "keypointlabels": [label]}}


def drag(xyxy, size, label="Shape"):
    (width, height), (x1, y1, x2, y2) = size, xyxy
    return {"id": "b", "type": "rectanglelabels", "from_name": "box", "to_name": "image", "original_width": width,
            "original_height": height, "image_rotation": 0, "origin": "manual",
            "value": {"x": x1 / width * 100, "y": y1 / height * 100, "width": (x2 - x1) / width * 100,
                      "height": (y2 - y1) / height * 100, "rotation": 0, "rectanglelabels": [label]}}


def interactive(base, label_config, image_path, regions):
    """Label Studio's smart-tool request (the captured one), for our image, config and prompts."""
    with open(WIRE_SAMPLE) as f:
        body = copy.deepcopy(json.load(f)["body"])
    body["tasks"][0]["data"]["image"] = image_path
    body["label_config"] = label_config
    body["params"]["context"]["result"] = regions
    response = requests.post(base + "/predict", json=body, timeout=120)
    assert response.status_code == 200, response.text
    (prediction,) = response.json()["results"]
    assert isinstance(prediction["score"], float) and prediction["model_version"] == "yolo", prediction
    return prediction


@pytest.fixture
def scenes(images_dir):
    """[(image path, (width, height), objects)] of scenes with two or three objects."""
    made = []
    for seed in SEEDS:
        image, objects = synthetic.segmentation_scene(seed)
        path = save_image(image, str(images_dir / f"scene-{seed}.png"))
        made.append((path, (image.shape[1], image.shape[0]), objects))
    return made


def only_mask(prediction, tag, size):
    (region,) = prediction["result"]
    assert (region["from_name"], region["to_name"], region["type"]) == (tag.lower(), "image", tag.lower())
    to_mask = brush_region_mask if tag == "BrushLabels" else polygon_region_mask
    return to_mask(region["value"], *size), region


def assert_is(mask, objects, wanted):
    """`mask` is object `wanted` (IoU > 0.8) and none of the others."""
    ious = [mask_iou(mask, o["mask"]) for o in objects]
    assert ious[wanted] > 0.8 and all(iou < 0.1 for i, iou in enumerate(ious) if i != wanted), ious


@pytest.mark.parametrize("tag", ["BrushLabels", "PolygonLabels"])
def test_a_click_on_each_object_returns_its_mask_with_the_prompts_label(yolo_server, scenes, tag):
    for path, size, objects in scenes:
        for i, obj in enumerate(objects):
            prediction = interactive(yolo_server, config((tag,)), path, [click(obj["center"], size, label="Mine")])
            mask, region = only_mask(prediction, tag, size)
            assert_is(mask, objects, i)
            assert region["value"][tag.lower()] == ["Mine"]  # the label the annotator chose, not the class
            assert prediction["score"] == pytest.approx(region["score"]) and region["score"] > 0.5
            if tag == "BrushLabels":
                assert (region["original_width"], region["original_height"]) == size
            else:
                assert region["value"]["closed"] is True and len(region["value"]["points"]) >= 3


def test_both_output_tags_answer_and_brush_rle_decodes_to_the_image_size(yolo_server, scenes):
    from label_studio_sdk.converter.brush import decode_rle

    path, size, objects = scenes[0]
    prediction = interactive(yolo_server, config(("BrushLabels", "PolygonLabels")), path,
                             [click(objects[0]["center"], size)])
    assert sorted(r["type"] for r in prediction["result"]) == ["brushlabels", "polygonlabels"]
    brush = next(r for r in prediction["result"] if r["type"] == "brushlabels")
    assert decode_rle(brush["value"]["rle"]).size == size[0] * size[1] * 4  # RGBA pixels of the whole image


def test_several_clicks_of_one_object_refine_the_same_mask(yolo_server, scenes):
    path, size, objects = scenes[0]
    obj = objects[0]
    inside = obj["polygon"].mean(axis=0) * 0.6 + obj["polygon"][0] * 0.4  # towards a corner, still inside
    prediction = interactive(yolo_server, config(), path, [click(obj["center"], size), click(inside, size)])
    assert_is(only_mask(prediction, "BrushLabels", size)[0], objects, 0)


def test_a_negative_click_on_a_neighbour_removes_it(yolo_server, scenes):
    path, size, objects = scenes[0]
    first, second = objects[:2]
    around_both = np.minimum(first["xyxy"], second["xyxy"])[:2].tolist() + np.maximum(first["xyxy"], second["xyxy"])[2:].tolist()
    for keep, drop in ((0, second), (1, first)):
        prediction = interactive(yolo_server, config(), path,
                                 [drag(around_both, size), click(drop["center"], size, positive=False)])
        assert_is(only_mask(prediction, "BrushLabels", size)[0], objects, keep)
    prediction = interactive(yolo_server, config(), path,
                             [click(first["center"], size), click(first["center"], size, positive=False)])
    assert prediction["result"] == []


def test_a_box_returns_the_object_in_it(yolo_server, scenes):
    for path, size, objects in scenes:
        for i, obj in enumerate(objects):
            x1, y1, x2, y2 = obj["xyxy"]
            prediction = interactive(yolo_server, config(), path, [drag((x1 - 4, y1 - 4, x2 + 4, y2 + 4), size, "Boxed")])
            mask, region = only_mask(prediction, "BrushLabels", size)
            assert_is(mask, objects, i)
            assert region["value"]["brushlabels"] == ["Boxed"]


def test_clicks_outside_every_object_return_an_empty_result(yolo_server, scenes):
    for path, size, objects in scenes:
        background = np.argwhere(~np.logical_or.reduce([o["mask"] for o in objects]))
        y, x = background[len(background) // 2]
        prediction = interactive(yolo_server, config(), path, [click((x, y), size)])
        assert prediction == {"result": [], "score": 0.0, "model_version": "yolo"}


def test_without_context_prompt_tags_are_not_predicted(yolo_server, scenes):
    """Retrieve Predictions: the output tag predicts every object; the prompt-only KeyPointLabels and
    RectangleLabels (no model_path of their own) run no pose model or detector."""
    path, size, objects = scenes[0]
    loaded_before = set(requests.get(yolo_server + "/health", timeout=10).json()["loaded_models"])
    response = requests.post(yolo_server + "/predict", timeout=120, json={
        "tasks": [{"id": 1, "data": {"image": path}}], "label_config": config(), "params": {"context": None}})
    assert response.status_code == 200, response.text
    (prediction,) = response.json()["results"]
    # a prompt tag predicted would have needed its default weights, missing here: an error
    assert "error" not in prediction
    assert {r["from_name"] for r in prediction["result"]} == {"brushlabels"}
    assert len(prediction["result"]) == len(objects)
    loaded = set(requests.get(yolo_server + "/health", timeout=10).json()["loaded_models"]) - loaded_before
    assert all("seg" in name for name in loaded), loaded  # the server is shared: only what this request loaded


def test_prompts_without_an_output_tag_are_a_400_naming_the_image(yolo_server, scenes):
    path, size, objects = scenes[0]
    label_config = (f'<View><Image name="image" value="$image"/>{PROMPT_TAGS}'
                    f'<RectangleLabels name="det" toName="image" model_path="shapes-det.pt">{LABELS}</RectangleLabels></View>')
    with open(WIRE_SAMPLE) as f:
        body = json.load(f)["body"]
    body.update(label_config=label_config, tasks=[{"id": 1, "data": {"image": path}}])
    body["params"]["context"]["result"] = [click(objects[0]["center"], size)]
    response = requests.post(yolo_server + "/predict", json=body, timeout=60)
    assert response.status_code == 400 and "BrushLabels" in response.json()["detail"] and "image" in response.json()["detail"]

"""Smart-tool prompts (utils/prompts.py) and the YOLO-seg instance picker, without a model."""

import json
import os

import numpy as np
import pytest

import synthetic
from interactive.geometry import box_iou, clip_to_box, contains, mask_to_polygon
from interactive.yolo_seg import pick_instance
from label_studio_ml.exceptions import BadRequest
from utils.detections import Detections
from utils.prompts import Prompts, read_prompts
from yolo_helpers import mask_iou, polygon_mask

WIRE_SAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "..", "tests", "data", "ls_wire_samples",
                           "POST_predict_interactive.json")


def point(x, y, positive=True, label="Car", to_name="image"):
    region = {"type": "keypointlabels", "from_name": "kp", "to_name": to_name, "original_width": 640,
              "original_height": 480, "value": {"x": x, "y": y, "width": 0.5, "keypointlabels": [label]}}
    if positive is not None:
        region["is_positive"] = positive
    return region


def box(x, y, width, height, label="Car", rotation=None):
    value = {"x": x, "y": y, "width": width, "height": height, "rectanglelabels": [label]}
    if rotation is not None:
        value["rotation"] = rotation
    return {"type": "rectanglelabels", "from_name": "box", "to_name": "image", "original_width": 640,
            "original_height": 480, "value": value}


def test_the_real_label_studio_request_reads_as_one_positive_click():
    with open(WIRE_SAMPLE) as f:
        context = json.load(f)["body"]["params"]["context"]
    (prompts,) = read_prompts(context)
    assert prompts == Prompts("image", points=((50.0, 40.0, True),), box=None, label="Car")
    pixels = prompts.in_pixels(640, 480)
    assert pixels.positives.tolist() == [[320.0, 192.0]] and len(pixels.negatives) == 0 and pixels.box is None


@pytest.mark.parametrize("context", [None, {}, {"result": []}, {"result": None}, "text",
                                     {"result": [{"type": "choices", "value": {"choices": ["A"]}}]}])
def test_no_prompt_means_a_normal_prediction(context):
    assert read_prompts(context) == []


def test_points_and_a_box_of_one_object_in_pixels():
    context = {"result": [point(10, 20), point(30, 40, positive=False), point(50, 50, positive="false"),
                          point(60, 60, positive=None), box(10, 10, 50, 25)]}
    (prompts,) = read_prompts(context)
    pixels = prompts.in_pixels(200, 100)
    assert pixels.points.tolist() == [[20, 20], [60, 40], [100, 50], [120, 60]]
    assert pixels.point_labels.tolist() == [1, 0, 0, 1]  # SAM's labels: an Alt-click is 0
    assert pixels.positives.tolist() == [[20, 20], [120, 60]]
    assert pixels.box.tolist() == [20, 10, 120, 35]
    assert prompts.label == "Car"


def test_prompts_are_grouped_per_image_and_the_label_comes_from_the_prompt():
    prompts = read_prompts({"result": [point(1, 1, label="Person", to_name="left"), point(2, 2, to_name="right")]})
    assert [(p.to_name, p.label, len(p.points)) for p in prompts] == [("left", "Person", 1), ("right", "Car", 1)]


def test_a_rotated_box_becomes_the_axis_aligned_box_around_it():
    (prompts,) = read_prompts({"result": [box(50, 10, 10, 10, rotation=90)]})
    # 64 x 48 px rotated 90 degrees clockwise about its top-left corner (320, 48): x 272..320, y 48..112
    x1, y1, x2, y2 = prompts.in_pixels(640, 480).box
    assert (x1, y1, x2, y2) == pytest.approx((272, 48, 320, 112))


@pytest.mark.parametrize("region", [point("12", 3), point(float("nan"), 3), point(True, 3),
                                    {"type": "keypointlabels", "value": None}, point(1, 2, positive="maybe"),
                                    box(1, 2, 3, 4, rotation="x")])
def test_unusable_prompt_is_a_bad_request(region):
    with pytest.raises(BadRequest):
        read_prompts({"result": [region]})


# ----- geometry and picking ------------------------------------------------------------------------

SQUARE = np.array([[10, 10], [40, 10], [40, 40], [10, 40]], float)    # 900 px
TRIANGLE = np.array([[70, 10], [95, 60], [45, 60]], float)          # 1250 px


def test_contains_box_iou_and_clip():
    assert contains(SQUARE, np.array([[30, 30], [10, 10], [41, 30]])).tolist() == [True, True, False]
    assert box_iou(SQUARE, np.array([10, 10, 40, 40])) == pytest.approx(1.0)
    assert box_iou(SQUARE, np.array([10, 10, 25, 40])) == pytest.approx(0.5, abs=0.03)
    clipped = clip_to_box(SQUARE, np.array([0, 0, 25, 100]))
    assert mask_iou(polygon_mask(clipped, 100, 100), polygon_mask([[10, 10], [25, 10], [25, 40], [10, 40]], 100, 100)) > 0.95
    assert clip_to_box(SQUARE, np.array([60, 60, 90, 90])) is None


def test_mask_to_polygon_keeps_the_largest_piece():
    image, objects = synthetic.segmentation_scene(synthetic.HELDOUT_SEED_START)
    big = max(objects, key=lambda o: o["mask"].sum())
    mask = np.logical_or.reduce([o["mask"] for o in objects])
    outline = mask_to_polygon(mask)
    assert mask_iou(polygon_mask(outline, image.shape[1], image.shape[0]), big["mask"]) > 0.95
    assert mask_to_polygon(np.zeros((5, 5), bool)) is None


def instances():
    return Detections(class_ids=[0, 1], scores=[0.6, 0.9], names={0: "square", 1: "triangle"},
                      xyxy=[[10, 10, 40, 40], [45, 10, 95, 60]], polygons=[SQUARE, TRIANGLE])


def pixels(*regions):
    (prompts,) = read_prompts({"result": list(regions)})
    return prompts.in_pixels(100, 100)  # percent == pixels below 100


def test_pick_the_instance_under_the_clicks():
    assert pick_instance(instances(), pixels(point(20, 20))).class_ids.tolist() == [0]
    assert pick_instance(instances(), pixels(point(20, 20), point(35, 35))).class_ids.tolist() == [0]
    assert len(pick_instance(instances(), pixels(point(20, 20), point(30, 30, positive=False)))) == 0
    assert len(pick_instance(instances(), pixels(point(5, 5)))) == 0          # outside every object
    assert len(pick_instance(instances(), pixels(point(20, 20, positive=False)))) == 0  # nothing positive


def test_pick_by_box_clips_to_it_and_negative_points_exclude():
    dets = pick_instance(instances(), pixels(box(5, 5, 50, 50)))
    assert dets.class_ids.tolist() == [0] and dets.polygons[0].min() >= 5
    both = box(5, 5, 92, 58)
    assert pick_instance(instances(), pixels(both)).class_ids.tolist() == [1]  # the triangle fills more of it
    assert pick_instance(instances(), pixels(both, point(30, 30, positive=False))).class_ids.tolist() == [1]
    assert pick_instance(instances(), pixels(both, point(70, 40, positive=False))).class_ids.tolist() == [0]
    clipped = pick_instance(instances(), pixels(box(30, 5, 10, 60)))
    assert clipped.polygons[0][:, 0].min() >= 30 and clipped.polygons[0][:, 0].max() <= 41

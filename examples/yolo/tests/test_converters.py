"""The pure Ultralytics -> Label Studio conversions, on hand-made arrays (no model)."""

import numpy as np
import pytest
from label_studio_sdk.converter.brush import decode_rle

from utils.converters import (brush_regions, choice_regions, keypoint_regions, oriented_rectangle_regions,
                              polygon_regions, rectangle_regions)

NAMES = {0: "circle", 1: "square", 2: "triangle"}


def test_rectangles_are_percent_top_left_and_thresholded():
    regions = rectangle_regions(
        xyxy=[[32, 24, 96, 120], [0, 0, 10, 10], [100, 100, 200, 200]], scores=[0.9, 0.3, 0.8], classes=[0, 1, 2],
        names=NAMES, label_map={"circle": "Circle", "square": "Square"}, width=320, height=240, threshold=0.5,
        from_name="label", to_name="image",
    )
    assert len(regions) == 1  # square below threshold, triangle unmapped
    region = regions[0]
    assert region["from_name"] == "label" and region["to_name"] == "image" and region["type"] == "rectanglelabels"
    assert region["value"] == pytest.approx({"rectanglelabels": ["Circle"], "x": 10, "y": 10, "width": 20, "height": 40})
    assert region["score"] == pytest.approx(0.9)


def test_oriented_box_rotation_and_size():
    # a 100x20 px bar centred at (160, 120) rotated by 30 degrees (clockwise on screen, y down)
    angle = np.radians(30)
    corners = np.array([[-50, -10], [50, -10], [50, 10], [-50, 10]], float)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    pts = corners @ rot.T + [160, 120]
    (region,) = oriented_rectangle_regions([pts], [0.8], [1], NAMES, {"square": "Bar"}, 320, 240, 0.5, "r", "i")
    value = region["value"]
    assert value["rotation"] == pytest.approx(30)
    assert value["width"] == pytest.approx(100 / 320 * 100) and value["height"] == pytest.approx(20 / 240 * 100)
    # x/y is the first corner (top-left of the unrotated box, rotated about the centre)
    assert value["x"] == pytest.approx(pts[0][0] / 320 * 100) and value["y"] == pytest.approx(pts[0][1] / 240 * 100)


def test_polygons_closed_percent_points():
    (region,) = polygon_regions([np.array([[0, 0], [160, 0], [160, 120]])], [0.7], [2], NAMES, {"triangle": "T"},
                                320, 240, 0.5, "poly", "image")
    assert region["value"] == {"polygonlabels": ["T"], "points": [[0.0, 0.0], [50.0, 0.0], [50.0, 50.0]], "closed": True}


def test_brush_rle_round_trips_to_the_mask():
    width, height = 64, 48
    square = np.array([[8, 8], [24, 8], [24, 32], [8, 32]])
    (region,) = brush_regions([square], [0.9], [1], NAMES, {"square": "Sq"}, width, height, 0.5, "brush", "image")
    assert region["type"] == "brushlabels" and region["value"]["brushlabels"] == ["Sq"]
    assert (region["original_width"], region["original_height"], region["image_rotation"]) == (64, 48, 0)
    decoded = decode_rle(region["value"]["rle"]).reshape(height, width, 4)[:, :, 3] > 0
    expected = np.zeros((height, width), bool)
    expected[8:33, 8:25] = True
    assert (decoded == expected).mean() > 0.99


def test_choices_single_picks_best_mapped_class_and_multiple_all_above_threshold():
    probs = [0.6, 0.3, 0.1]
    single = choice_regions(probs, NAMES, {"square": "Sq", "triangle": "Tri"}, 0.05, "single", "c", "image")
    assert single[0]["value"] == {"choices": ["Sq"]} and single[0]["score"] == pytest.approx(0.3)
    multiple = choice_regions(probs, NAMES, {"circle": "C", "square": "Sq", "triangle": "Tri"}, 0.25, "multiple", "c", "image")
    assert multiple[0]["value"] == {"choices": ["C", "Sq"]} and multiple[0]["score"] == pytest.approx(0.45)
    assert choice_regions(probs, NAMES, {"triangle": "Tri"}, 0.5, "single", "c", "image") == []
    taxonomy = choice_regions(probs, NAMES, {"circle": "Round"}, 0.5, "single", "t", "image", kind="taxonomy",
                              paths={"Round": ["Shapes", "Round"]})
    assert taxonomy[0]["type"] == "taxonomy" and taxonomy[0]["value"] == {"taxonomy": [["Shapes", "Round"]]}


def test_keypoints_grouped_under_hidden_parent_boxes():
    regions = keypoint_regions(
        boxes=[[10, 20, 110, 220], [0, 0, 5, 5]], box_scores=[0.9, 0.2], box_classes=[0, 0],
        keypoints=[[[50, 60], [70, 80], [1, 1]], [[1, 1], [2, 2], [3, 3]]],
        keypoint_scores=[[0.9, 0.4, 0.95], [0.9, 0.9, 0.9]],
        names={0: "person"}, point_map={"person::0": "nose", "person::1": "eye"},
        width=200, height=400, score_threshold=0.5, point_threshold=0.5, add_bboxes=True, point_size=2,
        from_name="kp", to_name="image",
    )
    assert [r["type"] for r in regions] == ["rectanglelabels", "keypointlabels"]
    box, nose = regions
    assert box["id"] == "bbox-0" and box["hidden"] is True and box["from_name"] == "kp_bbox"
    assert box["meta"] == {"text": ["bbox-0"]}
    assert nose["parentID"] == "bbox-0" and nose["meta"] == {"text": ["bbox-0"]}
    assert nose["value"] == pytest.approx({"keypointlabels": ["nose"], "x": 25, "y": 15, "width": 1})
    without_boxes = keypoint_regions([[10, 20, 110, 220]], [0.9], [0], [[[50, 60], [70, 80], [1, 1]]], None,
                                     {0: "person"}, {"person::0": "nose", "person::1": "eye"}, 200, 400, 0.5, 0.0,
                                     False, 1, "kp", "image")
    assert [r["value"]["keypointlabels"] for r in without_boxes] == [["nose"], ["eye"]]
    assert all("parentID" not in r for r in without_boxes)


def test_zero_detections_give_no_regions():
    empty = np.zeros((0, 4))
    assert rectangle_regions(empty, [], [], NAMES, {"circle": "c"}, 10, 10, 0.5, "a", "b") == []
    assert polygon_regions([], [], [], NAMES, {"circle": "c"}, 10, 10, 0.5, "a", "b") == []

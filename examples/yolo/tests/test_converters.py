"""The pure Ultralytics -> Label Studio conversions, on hand-made `Detections` (no model)."""

import numpy as np
import pytest
from label_studio_sdk.converter.brush import decode_rle

from utils.converters import to_brushes, to_choices, to_keypoints, to_oriented_rectangles, to_polygons, to_rectangles
from utils.detections import Detections, Target

NAMES = {0: "circle", 1: "square", 2: "triangle"}


def detections(class_ids, scores, **geometry) -> Detections:
    return Detections(class_ids=class_ids, scores=scores, names=NAMES, **geometry)


def test_labelled_keeps_mapped_classes_at_or_above_the_threshold():
    dets = detections([0, 1, 2, 0], [0.9, 0.3, 0.8, 0.5], xyxy=np.arange(16).reshape(4, 4))
    selected = dets.labelled({"circle": "Circle", "square": "Square"}, threshold=0.5)
    assert len(selected) == 2  # square below threshold, triangle unmapped, the last circle exactly at it
    assert list(selected.labels) == ["Circle", "Circle"]
    assert selected.xyxy.tolist() == [[0, 1, 2, 3], [12, 13, 14, 15]]
    assert selected.class_names == ["circle", "circle"]


def test_indexing_selects_every_per_object_field_alike():
    dets = detections([0, 1, 2], [0.1, 0.2, 0.3], xyxy=np.zeros((3, 4)), corners=np.ones((3, 4, 2)),
                      polygons=[np.zeros((3, 2)), np.ones((4, 2)), np.ones((5, 2))],
                      keypoints=np.arange(18).reshape(3, 3, 2), keypoint_scores=np.ones((3, 3)))
    picked = dets[np.array([False, True, True])]
    assert len(picked) == 2 and picked.class_ids.tolist() == [1, 2] and picked.scores.tolist() == [0.2, 0.3]
    assert picked.corners.shape == (2, 4, 2) and [len(p) for p in picked.polygons] == [4, 5]
    assert picked.keypoints[0].tolist() == [[6, 7], [8, 9], [10, 11]] and picked.keypoint_scores.shape == (2, 3)
    assert dets[1].class_ids.tolist() == [1] and len(dets[dets.scores > 1]) == 0
    assert picked.names is dets.names


def test_fields_of_another_length_are_refused():
    with pytest.raises(ValueError, match="polygons"):
        detections([0, 1], [0.5, 0.5], polygons=[np.zeros((3, 2))])


def test_converters_refuse_unlabelled_detections():
    with pytest.raises(ValueError, match="labelled"):
        to_rectangles(detections([0], [0.9], xyxy=[[0, 0, 1, 1]]), Target("label", "image", 10, 10))


def test_rectangles_are_percent_top_left():
    dets = detections([0], [0.9], xyxy=[[32, 24, 96, 120]]).labelled({"circle": "Circle"}, 0.5)
    (region,) = to_rectangles(dets, Target("label", "image", width=320, height=240))
    assert region["from_name"] == "label" and region["to_name"] == "image" and region["type"] == "rectanglelabels"
    value = dict(region["value"])
    assert value.pop("rectanglelabels") == ["Circle"]
    assert value == pytest.approx({"x": 10, "y": 10, "width": 20, "height": 40})
    assert region["score"] == pytest.approx(0.9)


def test_oriented_box_rotation_and_size():
    # a 100x20 px bar centred at (160, 120) rotated by 30 degrees (clockwise on screen, y down)
    angle = np.radians(30)
    corners = np.array([[-50, -10], [50, -10], [50, 10], [-50, 10]], float)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    pts = corners @ rot.T + [160, 120]
    dets = detections([1], [0.8], corners=[pts]).labelled({"square": "Bar"}, 0.5)
    (region,) = to_oriented_rectangles(dets, Target("r", "i", 320, 240))
    value = region["value"]
    assert value["rectanglelabels"] == ["Bar"] and value["rotation"] == pytest.approx(30)
    assert value["width"] == pytest.approx(100 / 320 * 100) and value["height"] == pytest.approx(20 / 240 * 100)
    # x/y is the first corner (top-left of the unrotated box, rotated about the centre)
    assert value["x"] == pytest.approx(pts[0][0] / 320 * 100) and value["y"] == pytest.approx(pts[0][1] / 240 * 100)
    assert (region["original_width"], region["original_height"]) == (320, 240)


def test_polygons_closed_percent_points_and_degenerate_outlines_dropped():
    dets = detections([2, 2], [0.7, 0.9], polygons=[[[0, 0], [160, 0], [160, 120]], [[0, 0], [5, 5]]])
    (region,) = to_polygons(dets.labelled({"triangle": "T"}, 0.5), Target("poly", "image", 320, 240))
    assert region["value"] == {"polygonlabels": ["T"], "points": [[0.0, 0.0], [50.0, 0.0], [50.0, 50.0]], "closed": True}
    assert region["score"] == pytest.approx(0.7)


def test_brush_rle_round_trips_to_the_mask():
    width, height = 64, 48
    square = np.array([[8, 8], [24, 8], [24, 32], [8, 32]])
    dets = detections([1], [0.9], polygons=[square]).labelled({"square": "Sq"}, 0.5)
    (region,) = to_brushes(dets, Target("brush", "image", width, height))
    assert region["type"] == "brushlabels" and region["value"]["brushlabels"] == ["Sq"]
    assert (region["original_width"], region["original_height"], region["image_rotation"]) == (64, 48, 0)
    decoded = decode_rle(region["value"]["rle"]).reshape(height, width, 4)[:, :, 3] > 0
    expected = np.zeros((height, width), bool)
    expected[8:33, 8:25] = True
    assert (decoded == expected).mean() > 0.99


def class_probabilities(probs) -> Detections:
    """A classifier's output as `Detections.from_ultralytics` gives it: one candidate per class."""
    return detections(np.arange(len(probs)), np.asarray(probs, float))


def test_choices_single_picks_best_mapped_class_and_multiple_all_above_threshold():
    probs = class_probabilities([0.6, 0.3, 0.1])
    target = Target("c", "image", 10, 10)
    single = to_choices(probs.labelled({"square": "Sq", "triangle": "Tri"}, 0.05), target, mode="single")
    assert single[0]["value"] == {"choices": ["Sq"]} and single[0]["score"] == pytest.approx(0.3)
    everything = {"circle": "C", "square": "Sq", "triangle": "Tri"}
    multiple = to_choices(probs.labelled(everything, 0.25), target, mode="multiple")
    assert multiple[0]["value"] == {"choices": ["C", "Sq"]} and multiple[0]["score"] == pytest.approx(0.45)
    assert to_choices(probs.labelled({"triangle": "Tri"}, 0.5), target, mode="single") == []
    taxonomy = to_choices(probs.labelled({"circle": "Round"}, 0.5), Target("t", "image", 10, 10), mode="single",
                          kind="taxonomy", paths={"Round": ["Shapes", "Round"]})
    assert taxonomy[0]["type"] == "taxonomy" and taxonomy[0]["value"] == {"taxonomy": [["Shapes", "Round"]]}


def test_a_label_mapped_from_two_classes_counts_once_with_its_best_probability():
    probs = class_probabilities([0.2, 0.5, 0.3])
    (region,) = to_choices(probs.labelled({"circle": "Round", "square": "Edgy", "triangle": "Edgy"}, 0.1),
                           Target("c", "image", 10, 10), mode="multiple")
    assert region["value"] == {"choices": ["Edgy", "Round"]} and region["score"] == pytest.approx(0.35)


POSE_NAMES = {0: "person"}
POINT_MAP = {"person::0": "nose", "person::1": "eye"}


def people(scores, boxes, keypoints, keypoint_scores=None) -> Detections:
    return Detections(class_ids=[0] * len(scores), scores=scores, names=POSE_NAMES, xyxy=boxes, keypoints=keypoints,
                      keypoint_scores=keypoint_scores)


def test_keypoints_grouped_under_hidden_parent_boxes():
    dets = people([0.9], [[10, 20, 110, 220]], [[[50, 60], [70, 80], [1, 1]]], [[0.9, 0.4, 0.95]])
    regions = to_keypoints(dets, Target("kp", "image", 200, 400), POINT_MAP, point_threshold=0.5, point_size=2)
    assert [r["type"] for r in regions] == ["rectanglelabels", "keypointlabels"]  # eye below 0.5, point 2 unmapped
    box, nose = regions
    assert box["id"] == "bbox-0" and box["hidden"] is True and box["from_name"] == "kp_bbox"
    assert box["meta"] == {"text": ["bbox-0"]} and box["value"]["rectanglelabels"] == ["person"]
    assert box["value"]["x"] == pytest.approx(5) and box["value"]["height"] == pytest.approx(50)
    assert nose["parentID"] == "bbox-0" and nose["meta"] == {"text": ["bbox-0"]} and nose["from_name"] == "kp"
    nose_value = dict(nose["value"])
    assert nose_value.pop("keypointlabels") == ["nose"]
    assert nose_value == pytest.approx({"x": 25, "y": 15, "width": 1})


def test_keypoints_without_boxes_or_point_scores_take_the_object_score():
    dets = people([0.7], [[10, 20, 110, 220]], [[[50, 60], [70, 80], [1, 1]]])
    regions = to_keypoints(dets, Target("kp", "image", 200, 400), POINT_MAP, add_bboxes=False)
    assert [r["value"]["keypointlabels"] for r in regions] == [["nose"], ["eye"]]
    assert all("parentID" not in r and r["score"] == pytest.approx(0.7) for r in regions)


def test_objects_without_a_kept_keypoint_give_no_box():
    dets = people([0.9, 0.8], [[0, 0, 5, 5], [10, 10, 20, 20]], [[[1, 1], [2, 2]], [[11, 11], [12, 12]]],
                  [[0.1, 0.1], [0.9, 0.9]])
    regions = to_keypoints(dets, Target("kp", "image", 100, 100), POINT_MAP, point_threshold=0.5)
    assert [r.get("id") or r["parentID"] for r in regions] == ["bbox-1", "bbox-1", "bbox-1"]


def test_zero_detections_give_no_regions():
    target = Target("a", "b", 10, 10)
    empty = detections(np.zeros(0), np.zeros(0), xyxy=np.zeros((0, 4)), polygons=[]).labelled({"circle": "c"}, 0.5)
    assert to_rectangles(empty, target) == [] and to_polygons(empty, target) == [] and to_brushes(empty, target) == []
    assert to_choices(empty, target) == []
    assert to_keypoints(people([], np.zeros((0, 4)), None), target, POINT_MAP) == []

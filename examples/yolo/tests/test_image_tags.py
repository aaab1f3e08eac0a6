"""Every image control tag through the HTTP API, checked against synthetic ground truth."""

import logging
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests
from PIL import Image

import synthetic
from yolo_helpers import (angle_difference, box_iou, brush_region_mask, mask_iou, polygon_mask,
                          polygon_region_mask, region_box_px, rotated_region_corners_px, save_image)

SEEDS = [synthetic.HELDOUT_SEED_START + i for i in range(6)]


def predict(base, label_config, tasks, project="1.1700000000"):
    response = requests.post(base + "/predict", json={"tasks": tasks, "label_config": label_config,
                                                      "project": project, "params": {}}, timeout=120)
    return response


def results_of(response):
    assert response.status_code == 200, response.text
    return response.json()["results"]


def image_config(control_xml, image_name="image"):
    return f'<View><Image name="{image_name}" value="$image"/>{control_xml}</View>'


def labels_xml(names, tag="Label"):
    return "".join(f'<{tag} value="{n}"/>' for n in names)


def write_scenes(images_dir, scene_fn, seeds=SEEDS, prefix="scene"):
    tasks, truths = [], []
    for seed in seeds:
        image, objects = scene_fn(seed)
        path = save_image(image, str(images_dir / f"{prefix}-{seed}.png"))
        tasks.append({"id": seed, "data": {"image": path}})
        truths.append((image, objects))
    return tasks, truths


def assert_each_object_found(regions, objects, match_fn, min_iou=0.5):
    """Every true object has a region of its label with IoU >= min_iou; no label is invented."""
    for obj in objects:
        ious = [match_fn(r, obj) for r in regions if obj["label"] in str(r["value"])]
        assert ious and max(ious) >= min_iou, (obj["label"], ious)
    assert len(regions) == len(objects), (len(regions), len(objects))


# ----- RectangleLabels -------------------------------------------------------------------------

def test_rectangle_labels_boxes_match_truth(yolo_server, images_dir):
    config = image_config(f'<RectangleLabels name="label" toName="image" model_path="shapes-det.pt">'
                          f'{labels_xml(synthetic.DETECTION_CLASSES)}</RectangleLabels>')
    tasks, truths = write_scenes(images_dir, synthetic.detection_scene)
    results = results_of(predict(yolo_server, config, tasks))
    assert len(results) == len(tasks)
    for prediction, (image, objects) in zip(results, truths):
        height, width = image.shape[:2]
        assert prediction["model_version"] == "yolo"
        regions = prediction["result"]
        assert all(r["type"] == "rectanglelabels" and r["from_name"] == "label" and r["to_name"] == "image"
                   for r in regions)
        assert_each_object_found(
            regions, objects,
            lambda r, o: box_iou(region_box_px(r["value"], width, height), o["xyxy"])
            if r["value"]["rectanglelabels"] == [o["label"]] else 0.0,
        )
        scores = [r["score"] for r in regions]
        assert prediction["score"] == pytest.approx(sum(scores) / len(scores))
        assert all(s >= 0.5 for s in scores)


def test_debug_plot_saves_the_newest_drawn_images_under_model_dir(yolo_server, serve_yolo, images_dir,
                                                                   backend_settings, yolo_settings):
    config = image_config(f'<RectangleLabels name="label" toName="image" model_path="shapes-det.pt">'
                          f'{labels_xml(synthetic.DETECTION_CLASSES)}</RectangleLabels>')
    tasks, truths = write_scenes(images_dir, synthetic.detection_scene)
    plots = Path(backend_settings.model_dir) / "debug-plots"
    results_of(predict(yolo_server, config, tasks[:1]))
    assert not plots.exists()  # off by default

    with serve_yolo(yolo=yolo_settings.replace(debug_plot=True, debug_plot_keep=4)) as plotting:
        results_of(predict(plotting, config, tasks))
    saved = sorted(plots.iterdir())
    assert len(saved) == 4 and all(p.name.endswith("-label.jpg") for p in saved)
    newest = cv2.imread(str(saved[-1]))
    image = truths[-1][0]  # the last task's image, drawn last
    assert newest.shape == image.shape
    assert np.abs(newest.astype(int) - image.astype(int)).max() > 100  # boxes drawn on it


def test_a_debug_plot_that_cannot_be_written_does_not_fail_the_prediction(serve_yolo, images_dir, backend_settings,
                                                                          yolo_settings, caplog):
    config = image_config(f'<RectangleLabels name="label" toName="image" model_path="shapes-det.pt">'
                          f'{labels_xml(synthetic.DETECTION_CLASSES)}</RectangleLabels>')
    tasks, truths = write_scenes(images_dir, synthetic.detection_scene, seeds=SEEDS[:1])
    model_dir = Path(backend_settings.model_dir)
    model_dir.mkdir(exist_ok=True)
    (model_dir / "debug-plots").write_text("a file where the directory should be")
    with serve_yolo(yolo=yolo_settings.replace(debug_plot=True)) as plotting, \
            caplog.at_level(logging.WARNING, logger="utils.debug_plots"):
        (prediction,) = results_of(predict(plotting, config, tasks))
    assert len(prediction["result"]) == len(truths[0][1]) and "error" not in prediction
    assert "Debug plot of <label> not saved" in caplog.text


def test_label_mapping_predicted_values_and_case(yolo_server, images_dir):
    config = image_config('<RectangleLabels name="label" toName="image" model_path="shapes-det.pt">'
                          '<Label value="Round" predicted_values="circle"/><Label value="SQUARE"/>'
                          '<Label value="Unicorn"/></RectangleLabels>')
    tasks, truths = write_scenes(images_dir, synthetic.detection_scene)
    results = results_of(predict(yolo_server, config, tasks))
    expected = {"circle": "Round", "square": "SQUARE"}  # triangles have no label: dropped
    for prediction, (_, objects) in zip(results, truths):
        found = sorted(r["value"]["rectanglelabels"][0] for r in prediction["result"])
        assert found == sorted(expected[o["label"]] for o in objects if o["label"] in expected)


def test_tag_without_any_mapped_label_is_skipped_and_logged(yolo_server, images_dir, caplog):
    config = image_config('<RectangleLabels name="nothing" toName="image" model_path="shapes-det.pt">'
                          '<Label value="Zebra"/></RectangleLabels>'
                          '<Choices name="shape" toName="image" model_path="shapes-cls.pt">'
                          f'{labels_xml(synthetic.CLASSIFICATION_CLASSES, "Choice")}</Choices>')
    image, label = synthetic.classification_image(SEEDS[0])
    path = save_image(image, str(images_dir / "c.png"))
    with caplog.at_level(logging.ERROR):
        (prediction,) = results_of(predict(yolo_server, config, [{"id": 1, "data": {"image": path}}]))
    assert [r["from_name"] for r in prediction["result"]] == ["shape"]
    assert "Zebra" in caplog.text and "circle" in caplog.text


def test_low_threshold_is_honoured_below_ultralytics_default(yolo_server, images_dir):
    """Ultralytics drops boxes under 0.25 by default; a 0.01 threshold must return them."""
    tasks = []
    for seed in SEEDS:
        image, _ = synthetic.detection_scene(seed)
        faint = cv2.addWeighted(image, 0.25, np.full_like(image, 128), 0.75, 0)  # washed-out shapes
        tasks.append({"id": seed, "data": {"image": save_image(faint, str(images_dir / f"faint-{seed}.png"))}})
    low = image_config('<RectangleLabels name="label" toName="image" model_path="shapes-det.pt" '
                       f'model_score_threshold="0.01">{labels_xml(synthetic.DETECTION_CLASSES)}</RectangleLabels>')
    scores = [r["score"] for p in results_of(predict(yolo_server, low, tasks)) for r in p["result"]]
    assert scores and min(scores) >= 0.01
    assert any(s < 0.25 for s in scores), scores
    high = low.replace('model_score_threshold="0.01"', 'model_score_threshold="0.6"')
    assert all(r["score"] >= 0.6 for p in results_of(predict(yolo_server, high, tasks)) for r in p["result"])


def test_exif_rotated_image_is_predicted_as_displayed(yolo_server, images_dir):
    image, objects = synthetic.detection_scene(SEEDS[1])
    height, width = image.shape[:2]
    # store the pixels rotated 90 degrees counter-clockwise with EXIF orientation 6 (rotate 90 CW to display)
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(image[:, :, ::-1])))
    exif = stored.getexif()
    exif[0x0112] = 6
    path = str(images_dir / "exif.jpg")
    stored.save(path, quality=95, exif=exif)
    config = image_config(f'<RectangleLabels name="label" toName="image" model_path="shapes-det.pt">'
                          f'{labels_xml(synthetic.DETECTION_CLASSES)}</RectangleLabels>')
    (prediction,) = results_of(predict(yolo_server, config, [{"id": 1, "data": {"image": path}}]))
    assert_each_object_found(
        prediction["result"], objects,
        lambda r, o: box_iou(region_box_px(r["value"], width, height), o["xyxy"])
        if r["value"]["rectanglelabels"] == [o["label"]] else 0.0,
    )


def test_zero_detections_answer_an_empty_result(yolo_server, images_dir):
    blank = np.full((240, 320, 3), 127, np.uint8)
    path = save_image(blank, str(images_dir / "blank.png"))
    config = image_config(f'<RectangleLabels name="label" toName="image" model_path="shapes-det.pt">'
                          f'{labels_xml(synthetic.DETECTION_CLASSES)}</RectangleLabels>')
    (prediction,) = results_of(predict(yolo_server, config, [{"id": 1, "data": {"image": path}}]))
    assert prediction == {"result": [], "score": 0.0, "model_version": "yolo"}


def test_one_corrupt_image_in_a_batch_of_five(yolo_server, images_dir):
    tasks, truths = write_scenes(images_dir, synthetic.detection_scene, seeds=SEEDS[:5])
    corrupt = images_dir / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\nthis is not really a png")
    tasks[2] = {"id": 99, "data": {"image": str(corrupt)}}
    tasks[4] = {"id": 98, "data": {"image": str(images_dir / "missing.png")}}
    config = image_config(f'<RectangleLabels name="label" toName="image" model_path="shapes-det.pt">'
                          f'{labels_xml(synthetic.DETECTION_CLASSES)}</RectangleLabels>')
    results = results_of(predict(yolo_server, config, tasks))
    assert len(results) == 5
    for index in (0, 1, 3):
        assert len(results[index]["result"]) == len(truths[index][1]) and "error" not in results[index]
    assert results[2]["result"] == [] and results[2]["score"] == 0 and "corrupt.png" in results[2]["error"]
    assert results[4]["result"] == [] and "missing.png" in results[4]["error"]
    assert all(r["model_version"] == "yolo" for r in results)


# ----- OBB -------------------------------------------------------------------------------------

def test_oriented_boxes_match_truth_and_rotation(yolo_server, images_dir):
    config = image_config('<RectangleLabels name="obb" toName="image" model_obb="true" model_path="shapes-obb.pt">'
                          f'{labels_xml(synthetic.OBB_CLASSES)}</RectangleLabels>')
    tasks, truths = write_scenes(images_dir, synthetic.obb_scene)
    results = results_of(predict(yolo_server, config, tasks))
    for prediction, (image, objects) in zip(results, truths):
        height, width = image.shape[:2]
        assert len(prediction["result"]) == len(objects)
        for obj in objects:
            true_mask = polygon_mask(obj["corners"], width, height)
            best = max(prediction["result"], key=lambda r: mask_iou(
                polygon_mask(rotated_region_corners_px(r["value"], width, height), width, height), true_mask))
            corners = rotated_region_corners_px(best["value"], width, height)
            assert best["value"]["rectanglelabels"] == [obj["label"]]
            assert mask_iou(polygon_mask(corners, width, height), true_mask) >= 0.5
            # the long side's direction on screen, compared modulo 180 degrees
            edges = [corners[1] - corners[0], corners[3] - corners[0]]
            long_edge = max(edges, key=np.linalg.norm)
            predicted_angle = np.degrees(np.arctan2(long_edge[1], long_edge[0]))
            assert angle_difference(predicted_angle, obj["angle_deg"]) <= 10


# ----- PolygonLabels / BrushLabels ---------------------------------------------------------------

@pytest.mark.parametrize("tag,to_mask", [("PolygonLabels", polygon_region_mask), ("BrushLabels", brush_region_mask)])
def test_segmentation_regions_match_true_masks(yolo_server, images_dir, tag, to_mask):
    config = image_config(f'<{tag} name="seg" toName="image" model_path="shapes-seg.pt">'
                          f'{labels_xml(synthetic.SEGMENTATION_CLASSES)}</{tag}>')
    tasks, truths = write_scenes(images_dir, synthetic.segmentation_scene)
    results = results_of(predict(yolo_server, config, tasks))
    for prediction, (image, objects) in zip(results, truths):
        height, width = image.shape[:2]
        assert all(r["type"] == tag.lower() for r in prediction["result"])
        assert_each_object_found(
            prediction["result"], objects,
            lambda r, o: mask_iou(to_mask(r["value"], width, height), o["mask"])
            if r["value"][tag.lower()] == [o["label"]] else 0.0,
        )


# ----- Choices / Taxonomy ----------------------------------------------------------------------

def classification_tasks(images_dir):
    tasks, labels = [], []
    for i, label in enumerate(synthetic.CLASSIFICATION_CLASSES * 2):
        image, label = synthetic.classification_image(SEEDS[i], label=label)
        tasks.append({"id": i, "data": {"image": save_image(image, str(images_dir / f"cls-{i}.png"))}})
        labels.append(label)
    return tasks, labels


def test_choices_single_picks_the_true_class(yolo_server, images_dir):
    config = image_config(f'<Choices name="shape" toName="image" model_path="shapes-cls.pt">'
                          f'{labels_xml(synthetic.CLASSIFICATION_CLASSES, "Choice")}</Choices>')
    tasks, labels = classification_tasks(images_dir)
    for prediction, label in zip(results_of(predict(yolo_server, config, tasks)), labels):
        (region,) = prediction["result"]
        assert region["type"] == "choices" and region["value"] == {"choices": [label]}
        assert region["score"] > 0.5


def test_choices_multiple_returns_every_class_above_threshold(yolo_server, images_dir):
    config = image_config('<Choices name="shape" toName="image" model_path="shapes-cls.pt" choice="multiple" '
                          f'model_score_threshold="0.0">{labels_xml(synthetic.CLASSIFICATION_CLASSES, "Choice")}'
                          '</Choices>')
    tasks, labels = classification_tasks(images_dir)
    for prediction, label in zip(results_of(predict(yolo_server, config, tasks)), labels):
        (region,) = prediction["result"]
        assert sorted(region["value"]["choices"]) == sorted(synthetic.CLASSIFICATION_CLASSES)
        assert region["value"]["choices"][0] == label  # most probable first
    strict = config.replace('model_score_threshold="0.0"', 'model_score_threshold="0.5"')
    for prediction, label in zip(results_of(predict(yolo_server, strict, tasks)), labels):
        assert prediction["result"][0]["value"]["choices"] == [label]


def test_choices_single_argmax_among_mapped_classes_only(yolo_server, images_dir):
    config = image_config('<Choices name="shape" toName="image" model_path="shapes-cls.pt" model_score_threshold="0">'
                          '<Choice value="triangle"/></Choices>')
    tasks, labels = classification_tasks(images_dir)
    for prediction in results_of(predict(yolo_server, config, tasks)):
        assert prediction["result"][0]["value"] == {"choices": ["triangle"]}


def test_taxonomy_returns_label_paths(yolo_server, images_dir):
    config = image_config('<Taxonomy name="tax" toName="image" model_path="shapes-cls.pt">'
                          '<Choice value="Round"><Choice value="circle"/></Choice>'
                          '<Choice value="Angular"><Choice value="square"/><Choice value="triangle"/></Choice>'
                          '</Taxonomy>')
    tasks, labels = classification_tasks(images_dir)
    parent = {"circle": "Round", "square": "Angular", "triangle": "Angular"}
    for prediction, label in zip(results_of(predict(yolo_server, config, tasks)), labels):
        (region,) = prediction["result"]
        assert region["type"] == "taxonomy" and region["value"] == {"taxonomy": [[parent[label], label]]}


# ----- KeyPointLabels --------------------------------------------------------------------------

def pose_config(extra=""):
    labels = "".join(f'<Label value="{name}" predicted_values="card" model_index="{i}"/>'
                     for i, name in enumerate(synthetic.POSE_KEYPOINTS))
    return image_config(f'<KeyPointLabels name="kp" toName="image" model_path="shapes-pose.pt" {extra}>'
                        f'{labels}</KeyPointLabels>')


def test_keypoints_within_five_percent_grouped_by_parent(yolo_server, images_dir):
    tasks, truths = write_scenes(images_dir, synthetic.pose_scene)
    results = results_of(predict(yolo_server, pose_config(), tasks))
    for prediction, (image, objects) in zip(results, truths):
        height, width = image.shape[:2]
        boxes = [r for r in prediction["result"] if r["type"] == "rectanglelabels"]
        points = [r for r in prediction["result"] if r["type"] == "keypointlabels"]
        assert len(boxes) == len(objects)
        assert all(b["hidden"] and b["from_name"] == "kp_bbox" and b["id"].startswith("bbox-") for b in boxes)
        for obj in objects:
            # the parent box of this object: best IoU with its truth box
            parent = max(boxes, key=lambda b: box_iou(region_box_px(b["value"], width, height), obj["xyxy"]))
            children = {p["value"]["keypointlabels"][0]: p for p in points if p["parentID"] == parent["id"]}
            assert set(children) == set(synthetic.POSE_KEYPOINTS)
            for k, name in enumerate(synthetic.POSE_KEYPOINTS):
                value = children[name]["value"]
                dx = value["x"] / 100 * width - obj["keypoints"][k][0]
                dy = value["y"] / 100 * height - obj["keypoints"][k][1]
                assert abs(dx) <= 0.05 * width and abs(dy) <= 0.05 * height, (name, dx, dy)
                assert children[name]["meta"] == {"text": [parent["id"]]}
                assert value["width"] == pytest.approx(1 / width * 100)


def test_keypoints_without_boxes_and_point_size(yolo_server, images_dir):
    tasks, truths = write_scenes(images_dir, synthetic.pose_scene, seeds=SEEDS[:2])
    config = pose_config('model_add_bboxes="false" model_point_size="3"')
    for prediction, (image, objects) in zip(results_of(predict(yolo_server, config, tasks)), truths):
        assert all(r["type"] == "keypointlabels" and "parentID" not in r for r in prediction["result"])
        assert len(prediction["result"]) == 4 * len(objects)
        assert all(r["value"]["width"] == pytest.approx(3 / image.shape[1] * 100) for r in prediction["result"])


@pytest.mark.parametrize("index", ["abc", "1.5", "-1", ""])
def test_keypoint_model_index_not_a_0_based_integer_is_a_400_naming_the_label(yolo_server, images_dir, index):
    config = image_config('<KeyPointLabels name="kp" toName="image" model_path="shapes-pose.pt">'
                          '<Label value="corner_a" predicted_values="card" model_index="0"/>'
                          f'<Label value="corner_b" predicted_values="card" model_index="{index}"/></KeyPointLabels>')
    tasks, _ = write_scenes(images_dir, synthetic.pose_scene, seeds=SEEDS[:1])
    response = predict(yolo_server, config, tasks)
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert 'name="kp"' in detail and 'value="corner_b"' in detail and f"model_index={index!r}" in detail


# ----- config handling -------------------------------------------------------------------------

def test_model_skip_and_mixed_tags_on_two_images(yolo_server, images_dir):
    det_image, det_objects = synthetic.detection_scene(SEEDS[2])
    cls_image, cls_label = synthetic.classification_image(SEEDS[3], label="square")
    config = ('<View><Image name="image1" value="$photo"/><Image name="image2" value="$thumb"/>'
              '<RectangleLabels name="boxes" toName="image1" model_path="shapes-det.pt">'
              f'{labels_xml(synthetic.DETECTION_CLASSES)}</RectangleLabels>'
              '<Choices name="kind" toName="image2" model_path="shapes-cls.pt">'
              f'{labels_xml(synthetic.CLASSIFICATION_CLASSES, "Choice")}</Choices>'
              '<PolygonLabels name="skipped" toName="image1" model_path="shapes-seg.pt" model_skip="true">'
              f'{labels_xml(synthetic.SEGMENTATION_CLASSES)}</PolygonLabels></View>')
    task = {"id": 1, "data": {"photo": save_image(det_image, str(images_dir / "p.png")),
                              "thumb": save_image(cls_image, str(images_dir / "t.png"))}}
    (prediction,) = results_of(predict(yolo_server, config, [task]))
    by_tag = {}
    for region in prediction["result"]:
        by_tag.setdefault(region["from_name"], []).append(region)
    assert set(by_tag) == {"boxes", "kind"}
    assert all(r["to_name"] == "image1" for r in by_tag["boxes"]) and len(by_tag["boxes"]) == len(det_objects)
    assert by_tag["kind"][0]["to_name"] == "image2" and by_tag["kind"][0]["value"] == {"choices": ["square"]}


def test_two_models_in_one_config(yolo_server, images_dir):
    config = image_config(
        '<RectangleLabels name="det" toName="image" model_path="shapes-det.pt">'
        f'{labels_xml(synthetic.DETECTION_CLASSES)}</RectangleLabels>'
        '<RectangleLabels name="from_seg" toName="image" model_path="shapes-seg.pt">'
        f'{labels_xml(synthetic.SEGMENTATION_CLASSES)}</RectangleLabels>')
    image, objects = synthetic.detection_scene(SEEDS[4])
    path = save_image(image, str(images_dir / "two.png"))
    (prediction,) = results_of(predict(yolo_server, config, [{"id": 1, "data": {"image": path}}]))
    height, width = image.shape[:2]
    for name in ("det", "from_seg"):
        regions = [r for r in prediction["result"] if r["from_name"] == name]
        assert_each_object_found(
            regions, objects,
            lambda r, o: box_iou(region_box_px(r["value"], width, height), o["xyxy"])
            if r["value"]["rectanglelabels"] == [o["label"]] else 0.0,
        )


@pytest.mark.parametrize("model_path,needle", [
    ("../secrets.pt", "not a path"),
    ("/etc/passwd", "not a path"),
    ("nope.pt", "available: shapes-cls.pt"),
])
def test_bad_model_path_is_a_400_naming_the_files(yolo_server, images_dir, model_path, needle):
    config = image_config(f'<RectangleLabels name="label" toName="image" model_path="{model_path}">'
                          '<Label value="circle"/></RectangleLabels>')
    response = predict(yolo_server, config, [{"id": 1, "data": {"image": "/tmp/x.png"}}])
    assert response.status_code == 400
    assert needle in response.json()["detail"]


def test_model_of_the_wrong_task_is_a_400(yolo_server):
    config = image_config('<PolygonLabels name="seg" toName="image" model_path="shapes-det.pt">'
                          '<Label value="circle"/></PolygonLabels>')
    response = predict(yolo_server, config, [{"id": 1, "data": {"image": "/tmp/x.png"}}])
    assert response.status_code == 400 and "segment" in response.json()["detail"]


def test_config_without_servable_tag_lists_supported_tags(yolo_server):
    config = '<View><Text name="text" value="$text"/><Choices name="c" toName="text"><Choice value="a"/></Choices></View>'
    response = predict(yolo_server, config, [{"id": 1, "data": {"text": "hello"}}])
    assert response.status_code == 400
    assert "RectangleLabels" in response.json()["detail"] and "KeyPointLabels" in response.json()["detail"]


# ----- the real COCO pose model ------------------------------------------------------------------

COCO_KEYPOINTS = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
                  "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
                  "right_knee", "left_ankle", "right_ankle"]


def ultralytics_asset(name):
    import ultralytics

    return os.path.join(os.path.dirname(ultralytics.__file__), "assets", name)


def test_real_pose_model_groups_each_persons_keypoints_under_a_hidden_box(yolo_server):
    labels = "".join(f'<Label value="{n}" predicted_values="person" model_index="{i}"/>'
                     for i, n in enumerate(COCO_KEYPOINTS))
    config = image_config(f'<KeyPointLabels name="kp" toName="image" model_path="yolo11n-pose.pt" '
                          f'model_score_threshold="0.5" model_point_threshold="0.5">{labels}</KeyPointLabels>')
    tasks = [{"id": 1, "data": {"image": ultralytics_asset("bus.jpg")}},
             {"id": 2, "data": {"image": ultralytics_asset("zidane.jpg")}}]
    for prediction, min_people in zip(results_of(predict(yolo_server, config, tasks)), (3, 2)):
        boxes = {r["id"]: r for r in prediction["result"] if r["type"] == "rectanglelabels"}
        points = [r for r in prediction["result"] if r["type"] == "keypointlabels"]
        assert len(boxes) >= min_people
        assert all(b["hidden"] and b["value"]["rectanglelabels"] == ["person"] for b in boxes.values())
        for box_id, box in boxes.items():
            own = [p for p in points if p["parentID"] == box_id]
            assert len(own) >= 5, (box_id, len(own))  # a visible person shows most of its 17 keypoints
            v = box["value"]
            margin = 5  # percent: keypoints lie in (or at the edge of) their person's box
            for p in own:
                assert v["x"] - margin <= p["value"]["x"] <= v["x"] + v["width"] + margin
                assert v["y"] - margin <= p["value"]["y"] <= v["y"] + v["height"] + margin
        assert {p["parentID"] for p in points} == set(boxes)


GAPPED_KEYPOINTS = {"nose": 0, "left_shoulder": 5, "right_shoulder": 6}


def gapped_keypoints_config(trainable):
    labels = "".join(f'<Label value="{n}" predicted_values="person" model_index="{i}"/>'
                     for n, i in GAPPED_KEYPOINTS.items())
    return image_config(f'<KeyPointLabels name="kp" toName="image" model_path="yolo11n-pose.pt" '
                        f'model_trainable="{trainable}" model_score_threshold="0.5" '
                        f'model_point_threshold="0.5">{labels}</KeyPointLabels>')


@pytest.mark.parametrize("trainable", ["false", "true"])
def test_trainable_keypoints_keep_their_model_index_until_a_trained_version_serves(yolo_server, trainable):
    """Before its first training the tag's own weights serve: `model_index` (with gaps) says
    which of their keypoints is which, trainable or not. Shoulders are well below the nose."""
    tasks = [{"id": 1, "data": {"image": ultralytics_asset("zidane.jpg")}}]
    (prediction,) = results_of(predict(yolo_server, gapped_keypoints_config(trainable), tasks))
    assert prediction["model_version"] == "yolo"
    people = {}
    for point in (r for r in prediction["result"] if r["type"] == "keypointlabels"):
        people.setdefault(point["parentID"], {})[point["value"]["keypointlabels"][0]] = point["value"]["y"]
    complete = [person for person in people.values() if set(person) == set(GAPPED_KEYPOINTS)]
    assert len(complete) >= 2, people
    for person in complete:
        assert person["left_shoulder"] > person["nose"] + 3 and person["right_shoulder"] > person["nose"] + 3, person


def test_a_serving_trained_keypoint_version_numbers_every_label_without_gaps(new_backend, tmp_path):
    from training.versions import ServingState, Version

    trained = Version(tag="kp", number=1, path=str(tmp_path / "trained" / "1" / "kp" / "v1"),
                      metrics={"published": True})
    backend = new_backend(label_config=gapped_keypoints_config("true"))
    (own,) = backend.control_models(serving=ServingState(number=0, published=(trained,)))
    assert own.point_indices == GAPPED_KEYPOINTS and not own.serves_trained
    (served,) = backend.control_models(serving=ServingState(number=1, published=(trained,)))
    assert served.serves_trained and served.model_path == trained.weights
    assert served.point_indices == {"nose": 0, "left_shoulder": 1, "right_shoulder": 2}
    assert served.trainable_tag().keypoints == ("nose", "left_shoulder", "right_shoulder")


def test_rectangle_labels_with_the_pose_model_finds_the_people(yolo_server):
    config = image_config('<RectangleLabels name="people" toName="image" model_path="yolo11n-pose.pt">'
                          '<Label value="Person" predicted_values="person"/></RectangleLabels>')
    (prediction,) = results_of(predict(yolo_server, config, [{"id": 1, "data": {"image": ultralytics_asset("zidane.jpg")}}]))
    boxes = [r for r in prediction["result"] if r["value"]["rectanglelabels"] == ["Person"]]
    assert len(boxes) >= 2
    # zidane.jpg: two men standing side by side, left one around x 10-55%, right one around 55-90%
    centers = sorted(b["value"]["x"] + b["value"]["width"] / 2 for b in boxes)
    assert centers[0] < 50 < centers[-1]


def test_health_reports_the_servers_own_yolo_settings(serve_yolo, yolo_settings, tmp_path):
    """A backend configured in code (`model_kwargs`) shows its own model root and device, not the
    environment's."""
    elsewhere = tmp_path / "other-models"
    elsewhere.mkdir()
    with serve_yolo(yolo=yolo_settings.replace(model_root=str(elsewhere), device="cpu")) as base:
        health = requests.get(base + "/health", timeout=10).json()
        metrics = requests.get(base + "/metrics", timeout=10).json()
    assert (health["model_root"], health["device"]) == (str(elsewhere), "cpu")
    assert metrics["model_root"] == str(elsewhere)

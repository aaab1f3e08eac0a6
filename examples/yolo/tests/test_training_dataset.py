"""Label Studio annotations -> Ultralytics dataset: round trips from synthetic scenes with known
objects, expressed as Label Studio JSON (percent, rotation about the top-left corner, brush RLE)."""

import os

import cv2
import numpy as np
import pytest
import yaml

import synthetic as syn
from training.dataset import (CannotTrain, TrainableTag, build_dataset, choose_annotation, flip_index,
                              keypoint_order, split_by_task_id)
from training_scenes import HEIGHT, WIDTH, brushes, percent, polygons, region
from yolo_helpers import TEST_MODELS_DIR, mask_iou, polygon_mask

N_TASKS = 10


def task(task_id, image_path, result, **annotation):
    return {"id": task_id, "data": {"image": str(image_path)},
            "annotations": [{"id": task_id * 10, "result": result, "was_cancelled": False, **annotation}]}


def media(task):
    return task["data"]["image"]


def make_tasks(tmp_path, scene, to_result, n=N_TASKS):
    """Tasks of `n` synthetic scenes (image files written) and their ground truth by task id."""
    tasks, truth = [], {}
    for task_id in range(1, n + 1):
        image, objects = scene(syn.HELDOUT_SEED_START + task_id)
        path = tmp_path / f"scene-{task_id}.png"
        cv2.imwrite(str(path), image)
        tasks.append(task(task_id, path, to_result(objects)))
        truth[task_id] = objects
    return tasks, truth


def read_lines(dataset, task_id):
    split = "train" if task_id in dataset.train_ids else "val"
    with open(os.path.join(dataset.root, "labels", split, f"{task_id}.txt")) as f:
        return [[float(v) for v in line.split()] for line in f.read().splitlines()]


def round_trip(tmp_path, scene, to_result, tag):
    """(dataset, [(label line, ground-truth object)...]) of N_TASKS scenes, class ids checked."""
    tasks, truth = make_tasks(tmp_path, scene, to_result)
    dataset = build_dataset(tasks, tag, media, str(tmp_path / "dataset"))
    pairs = []
    for task_id, objects in truth.items():
        lines = read_lines(dataset, task_id)
        assert [int(line[0]) for line in lines] == [tag.labels.index(o["label"]) for o in objects]
        pairs += zip(lines, objects)
    return dataset, pairs


def pixels(normalised):
    return np.asarray(normalised, float).reshape(-1, 2) * (WIDTH, HEIGHT)


def corners_of(box):
    """Pixel `x1 y1 x2 y2` of a normalised `cx cy w h`."""
    cx, cy, w, h = np.asarray(box) * (WIDTH, HEIGHT, WIDTH, HEIGHT)
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


# Labels deliberately not in the synthetic class order: class ids must follow the config.
DETECTION_LABELS = ("triangle", "circle", "square")


def rectangle(obj, from_name="label"):
    x1, y1, x2, y2 = obj["xyxy"]
    x, y = percent(x1, y1)
    width, height = percent(x2 - x1, y2 - y1)
    return region(from_name, "rectanglelabels",
                  {"x": x, "y": y, "width": width, "height": height, "rotation": 0, "rectanglelabels": [obj["label"]]})


def test_boxes_round_trip_with_class_ids_in_config_order(tmp_path):
    dataset, pairs = round_trip(tmp_path, syn.detection_scene, lambda objects: [rectangle(o) for o in objects],
                                TrainableTag("label", "detect", DETECTION_LABELS))

    assert sorted(dataset.train_ids + dataset.val_ids) == list(range(1, N_TASKS + 1)) and not dataset.skipped
    for line, obj in pairs:
        assert np.allclose(corners_of(line[1:]), obj["xyxy"], atol=1.0)
    with open(dataset.data) as f:
        data = yaml.safe_load(f)
    assert data["names"] == {0: "triangle", 1: "circle", 2: "square"} and data["path"] == dataset.root
    image = os.path.join(dataset.root, "images", "train", f"{dataset.train_ids[0]}.png")
    assert cv2.imread(image).shape == (HEIGHT, WIDTH, 3)


def rotated_rectangle(obj):
    """Label Studio's rotated rectangle: x/y = the unrotated top-left corner after rotation, the
    box rotated about it by `rotation` degrees (clockwise on screen)."""
    w, h = obj["size"]
    x, y = percent(*obj["corners"][0])
    width, height = percent(w, h)
    return region("label", "rectanglelabels", {"x": x, "y": y, "width": width, "height": height,
                                               "rotation": obj["angle_deg"], "rectanglelabels": [obj["label"]]})


def test_rotated_boxes_round_trip_as_corners(tmp_path):
    _, pairs = round_trip(tmp_path, syn.obb_scene, lambda objects: [rotated_rectangle(o) for o in objects],
                          TrainableTag("label", "obb", ("ellipse", "rectangle")))
    for line, obj in pairs:
        assert np.allclose(pixels(line[1:]), obj["corners"], atol=1.0)


def test_unrotated_and_rotated_rectangles_give_axis_aligned_boxes_for_detection(tmp_path):
    _, pairs = round_trip(tmp_path, syn.obb_scene, lambda objects: [rotated_rectangle(o) for o in objects],
                          TrainableTag("label", "detect", ("ellipse", "rectangle")))
    for line, obj in pairs:
        corners = np.clip(obj["corners"], 0, (WIDTH, HEIGHT))
        assert np.allclose(corners_of(line[1:]), [*corners.min(axis=0), *corners.max(axis=0)], atol=1.0)


def keypoints_with_boxes(objects, keypoints=range(syn.NUM_KEYPOINTS)):
    """Per card a `kp_bbox` rectangle and the `kp` keypoints (indices `keypoints`) under it."""
    result = []
    for i, obj in enumerate(objects):
        box = rectangle(obj, from_name="kp_bbox")
        box["id"] = f"bbox-{i}"
        result.append(box)
        for k in keypoints:
            x, y = percent(*obj["keypoints"][k])
            result.append(region("kp", "keypointlabels", {"x": x, "y": y, "width": 0.5,
                                                          "keypointlabels": [syn.POSE_KEYPOINTS[k]]},
                                 parentID=f"bbox-{i}", id=f"kp-{i}-{k}"))
    return result


def test_polygons_round_trip(tmp_path):
    _, pairs = round_trip(tmp_path, syn.segmentation_scene, polygons,
                          TrainableTag("poly", "segment", syn.SEGMENTATION_CLASSES))
    for line, obj in pairs:
        assert np.allclose(pixels(line[1:]), np.clip(obj["polygon"], 0, (WIDTH, HEIGHT)), atol=1.0)


def test_brush_masks_round_trip_as_outlines(tmp_path):
    _, pairs = round_trip(tmp_path, syn.segmentation_scene, brushes,
                          TrainableTag("brush", "segment", syn.SEGMENTATION_CLASSES))
    for line, obj in pairs:
        outline = pixels(line[1:])
        assert mask_iou(polygon_mask(outline, WIDTH, HEIGHT), obj["mask"]) > 0.9
        ys, xs = np.nonzero(obj["mask"])
        assert np.allclose([*outline.min(axis=0), *outline.max(axis=0)],
                           [xs.min() + 0.5, ys.min() + 0.5, xs.max() + 0.5, ys.max() + 0.5], atol=1.0)


def test_choices_become_class_folders_with_every_label(tmp_path):
    tasks = []
    for task_id in range(1, N_TASKS + 1):
        image, label = syn.classification_image(syn.HELDOUT_SEED_START + task_id)
        path = tmp_path / f"image-{task_id}.jpg"
        cv2.imwrite(str(path), image)
        tasks.append(task(task_id, path, [region("class", "choices", {"choices": [label]})]))
    labels = syn.CLASSIFICATION_CLASSES + ("star",)
    dataset = build_dataset(tasks, TrainableTag("class", "classify", labels), media, str(tmp_path / "dataset"))

    assert dataset.data == dataset.root
    for split in ("train", "val"):
        assert sorted(os.listdir(os.path.join(dataset.root, split))) == sorted(labels)  # "star": empty folder
    for t in tasks:
        split = "train" if t["id"] in dataset.train_ids else "val"
        label = t["annotations"][0]["result"][0]["value"]["choices"][0]
        assert os.path.isfile(os.path.join(dataset.root, split, label, f"{t['id']}.jpg"))


def test_taxonomy_paths_teach_their_leaf(tmp_path):
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), syn.classification_image(1)[0])
    tasks = [task(i, image, [region("tax", "taxonomy", {"taxonomy": [["Shapes", "Round", "circle"]]})])
             for i in range(1, 4)]
    dataset = build_dataset(tasks, TrainableTag("tax", "classify", ("Shapes", "Round", "circle")), media,
                            str(tmp_path / "dataset"), min_tasks=3)
    assert len(os.listdir(os.path.join(dataset.root, "train", "circle"))) == len(dataset.train_ids)


def test_keypoints_grouped_under_their_parent_boxes_in_model_index_order(tmp_path):
    # config order differs from the model order given by model_index
    config_labels = ("bottom_left", "top_left", "bottom_right", "top_right")
    model_index = {"bottom_left": 3, "top_left": 0, "bottom_right": 2, "top_right": 1}
    keypoints = keypoint_order(config_labels, model_index)
    assert keypoints == syn.POSE_KEYPOINTS

    def to_result(objects):
        orphan = region("kp", "keypointlabels", {"x": 1, "y": 1, "keypointlabels": ["top_left"]})
        return keypoints_with_boxes(objects, keypoints=(3, 1, 0)) + [orphan]  # bottom_right left out

    tasks, truth = make_tasks(tmp_path, syn.pose_scene, to_result)
    dataset = build_dataset(tasks, TrainableTag("kp", "pose", ("card",), keypoints), media, str(tmp_path / "dataset"))

    assert dataset.ignored_regions == {"keypoint without a parent box": N_TASKS}
    for task_id, objects in truth.items():
        lines = read_lines(dataset, task_id)
        assert len(lines) == len(objects)
        for line, obj in zip(lines, objects):
            assert line[0] == 0
            assert np.allclose(corners_of(line[1:5]), obj["xyxy"], atol=1.0)
            points = np.asarray(line[5:]).reshape(-1, 3)
            assert points[:, 2].tolist() == [2, 2, 0, 2]  # bottom_right was not annotated
            assert points[2].tolist() == [0, 0, 0]
            for k in (0, 1, 3):
                assert np.allclose(points[k, :2] * (WIDTH, HEIGHT), obj["keypoints"][k], atol=1.0)
    with open(dataset.data) as f:
        data = yaml.safe_load(f)
    assert data["kpt_shape"] == [4, 3] and data["names"] == {0: "card"}
    assert data["flip_idx"] == [1, 0, 3, 2]  # top_left <-> top_right, bottom_right <-> bottom_left


def test_flip_index_swaps_left_and_right_words_only():
    names = ["nose", "left_eye", "Right Hand", "LEFT-EAR", "right-ear", "bright", "leftover", "right_eye"]
    assert flip_index(names) == [0, 7, 2, 4, 3, 5, 6, 1]  # "Right Hand" has no "Left Hand": it stays


def test_keypoint_order_refuses_two_labels_on_one_index():
    with pytest.raises(CannotTrain, match="share model_index=0"):
        keypoint_order(["a", "b"], {"a": 0, "b": 0})
    assert keypoint_order(["x", "a", "b"], {"b": 0}) == ("b", "x", "a")


def test_choose_annotation_ignores_cancelled_prefers_ground_truth_then_most_recent():
    def annotation(i, updated, **flags):
        return {"id": i, "updated_at": updated, "result": [], **flags}

    older = annotation(1, "2024-05-01T10:00:00Z")
    newer = annotation(2, "2024-05-01T10:00:00.500000Z")  # other precision: compared as times, not text
    cancelled = annotation(3, "2024-06-01T00:00:00Z", was_cancelled=True)
    truth = annotation(4, "2023-01-01T00:00:00Z", ground_truth=True)
    assert choose_annotation({"annotations": [older, newer, cancelled]}) is newer
    assert choose_annotation({"annotations": [older, truth, newer]}) is truth
    assert choose_annotation({"annotations": [cancelled]}) is None
    assert choose_annotation({"annotations": []}) is None


def test_split_is_deterministic_stable_and_never_leaves_a_side_empty():
    ids = list(range(1, 51))
    train, val = split_by_task_id(ids)
    assert len(val) == 10 and sorted(train + val) == ids
    assert split_by_task_id(list(reversed(ids)))[1] == sorted(val, reverse=True)
    grown_train, grown_val = split_by_task_id(ids + list(range(51, 101)))
    assert len(set(val) - set(grown_val)) <= 2, "adding tasks moves few tasks across"
    assert [len(side) for side in split_by_task_id([7, 8])] == [1, 1]
    assert [len(side) for side in split_by_task_id([1, 2, 3])] == [2, 1]


def test_unusable_tasks_are_skipped_with_their_reason_and_counted(tmp_path):
    tasks, _ = make_tasks(tmp_path, syn.detection_scene, lambda objects: [rectangle(o) for o in objects], n=12)
    tasks[0]["annotations"][0]["was_cancelled"] = True
    tasks[1]["data"]["image"] = str(tmp_path / "missing.png")
    tasks[2]["annotations"][0]["result"] = [region("other", "choices", {"choices": ["x"]})]
    tasks[3]["annotations"][0]["result"] = []  # submitted empty: an image without objects
    for r in tasks[4]["annotations"][0]["result"]:
        r["value"]["rectanglelabels"] = ["hexagon"]
    tasks[5]["id"] = "../../etc"
    dataset = build_dataset(tasks, TrainableTag("label", "detect", DETECTION_LABELS), media,
                            str(tmp_path / "dataset"), min_tasks=5)

    assert set(dataset.skipped) == {"1", "2", "3", "5", "../../etc"}
    assert dataset.skipped["1"] == "no annotation (or only cancelled ones)"
    assert dataset.skipped["2"].startswith("media: FileNotFoundError") and "missing.png" in dataset.skipped["2"]
    assert dataset.skipped["3"] == "the annotation has no regions of 'label'"
    assert dataset.skipped["5"] == "no usable region"
    assert dataset.ignored_regions["label not in the labeling config"] >= 1
    assert read_lines(dataset, 4) == []
    assert dataset.summary()["skipped_tasks"] == 5 and len(dataset.train_ids) + len(dataset.val_ids) == 7


def test_too_few_usable_tasks_is_a_clear_reason(tmp_path):
    tasks, _ = make_tasks(tmp_path, syn.detection_scene, lambda objects: [rectangle(o) for o in objects], n=4)
    tasks[0]["annotations"] = []
    with pytest.raises(CannotTrain, match=r"'label' has 3 usable annotated tasks, 10 are needed "
                                          r"\(model_train_min_tasks\); 1 skipped"):
        build_dataset(tasks, TrainableTag("label", "detect", DETECTION_LABELS), media, str(tmp_path / "dataset"))
    assert not (tmp_path / "dataset").exists()


def test_a_label_that_cannot_name_a_folder_stops_classification_training(tmp_path):
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), syn.classification_image(1)[0])
    tasks = [task(i, image, [region("c", "choices", {"choices": ["ok"]})]) for i in range(1, 3)]
    with pytest.raises(CannotTrain, match="cannot name a class folder"):
        build_dataset(tasks, TrainableTag("c", "classify", ("ok", "a/b")), media, str(tmp_path / "d"), min_tasks=2)


@pytest.mark.parametrize("scene, to_result, tag, weights, metric", [
    (syn.obb_scene, lambda objects: [rotated_rectangle(o) for o in objects],
     TrainableTag("label", "obb", syn.OBB_CLASSES), "shapes-obb.pt", "metrics/mAP50-95(B)"),
    (syn.segmentation_scene, brushes, TrainableTag("brush", "segment", syn.SEGMENTATION_CLASSES), "shapes-seg.pt",
     "metrics/mAP50-95(M)"),
    (syn.pose_scene, keypoints_with_boxes, TrainableTag("kp", "pose", ("card",), syn.POSE_KEYPOINTS), "shapes-pose.pt",
     "metrics/mAP50-95(P)"),
], ids=["obb", "brush-segment", "pose"])
def test_ultralytics_reads_the_dataset_as_the_scenes_are(tmp_path, monkeypatch, scene, to_result, tag, weights, metric):
    """The test model of the task, trained on the scenes' true geometry, scores high on the
    converted labels: Ultralytics reads the layout, and the geometry (rotation, contours,
    keypoint order) is the scenes'."""
    from ultralytics import YOLO

    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path / "ultralytics"))
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "matplotlib"))
    tasks, _ = make_tasks(tmp_path, scene, to_result, n=20)
    dataset = build_dataset(tasks, tag, media, str(tmp_path / "dataset"))
    results = YOLO(os.path.join(TEST_MODELS_DIR, weights)).val(
        data=dataset.data, split="val", imgsz=192, batch=8, device="cpu", workers=0, plots=False, verbose=False,
        project=str(tmp_path / "val"))
    assert results.results_dict[metric] > 0.8

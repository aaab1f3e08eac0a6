"""The YOLO backend served to a real Label Studio 1.23.2, driven only through Label Studio's API.

Media are imported by upload, so the backend must fetch `/data/upload/...` from Label Studio with
the token; Label Studio itself calls /health, /setup, /predict and /webhook; the checks read what
Label Studio STORED, against synthetic ground truth.
"""

import os
import socket

import numpy as np
import pytest
import requests

import synthetic
import synthetic_video
from checks import DETECTION_CONFIG, SEEDS, VERSION, assert_objects_found, image_config, labels, write_scenes
from helpers import wait_until
from ls_api import (backend_errors, backend_requests, connect_model, create_annotation, create_project,
                    import_tasks, only_prediction, retrieve_predictions, start_training, tasks_of, upload_files)
from servers import yolo_backend_process
from yolo_helpers import (box_iou, brush_region_mask, mask_iou, polygon_mask, polygon_region_mask, region_box_px,
                          rotated_region_corners_px, save_image)

pytestmark = pytest.mark.e2e


def project_with_uploads(ls, backend, title, config, paths):
    project_id = create_project(ls, title, config)
    tasks = upload_files(ls, project_id, paths)
    ml = connect_model(ls, project_id, backend.url)
    return project_id, tasks, ml


def retrieve_all(ls, backend, project_id):
    """Retrieve Predictions for every task; Label Studio must send ONE /predict for the batch (it
    accepts the answer only with one prediction per task). Returns `{task id: stored task}`."""
    before = backend_requests(backend.url).get("/predict", 0)
    retrieve_predictions(ls, project_id)
    assert backend_requests(backend.url).get("/predict", 0) - before == 1
    return {task["id"]: task for task in tasks_of(ls, project_id)}


# ----- connecting ---------------------------------------------------------------------------------

def test_connect_model_runs_setup_and_registers_the_webhook(label_studio, yolo_backend):
    counts = backend_requests(yolo_backend.url)
    project_id = create_project(label_studio, "connect", DETECTION_CONFIG)
    ml = connect_model(label_studio, project_id, yolo_backend.url)
    assert ml["model_version"] == VERSION  # what /setup answered
    after = backend_requests(yolo_backend.url)
    assert after["/health"] > counts.get("/health", 0) and after["/setup"] > counts.get("/setup", 0)
    hooks = label_studio.client().webhooks.list(project=str(project_id))
    assert [(h.url, h.send_payload, h.send_for_all_actions) for h in hooks] == [(yolo_backend.url + "/webhook", True, True)]
    # the start-up check found Label Studio with the configured URL and token
    assert f"Label Studio at {label_studio.url} is reachable, legacy token accepted" in yolo_backend.log(0)


def predicted_scenes(ls, backend, tmp_path, title, config, scene_fn):
    """Synthetic scenes uploaded to a new project with the backend connected, predictions
    retrieved; yields `(stored prediction, image, true objects)` per scene."""
    scenes = write_scenes(tmp_path, scene_fn, title)
    project_id, uploaded, _ = project_with_uploads(ls, backend, title, config, [p for p, _, _ in scenes.values()])
    stored = retrieve_all(ls, backend, project_id)
    for name, (_, image, objects) in scenes.items():
        yield only_prediction(stored[uploaded[name]["id"]]), image, objects


# ----- image control tags -------------------------------------------------------------------------

def test_rectangle_labels_stored_for_uploaded_images(label_studio, yolo_backend, tmp_path):
    for prediction, image, objects in predicted_scenes(label_studio, yolo_backend, tmp_path, "boxes",
                                                       DETECTION_CONFIG, synthetic.detection_scene):
        height, width = image.shape[:2]
        assert prediction["model_version"] == VERSION
        regions = prediction["result"]
        assert all((r["from_name"], r["to_name"], r["type"]) == ("label", "image", "rectanglelabels") for r in regions)
        assert_objects_found(regions, objects,
                             lambda r, o: box_iou(region_box_px(r["value"], width, height), o["xyxy"]))
        assert prediction["score"] == pytest.approx(np.mean([r["score"] for r in regions]))
    assert backend_errors(yolo_backend.url) == {}


def test_polygons_and_brush_masks_stored(label_studio, yolo_backend, tmp_path):
    config = image_config(
        f'<PolygonLabels name="poly" toName="image" model_path="shapes-seg.pt">{labels(synthetic.SEGMENTATION_CLASSES)}'
        f'</PolygonLabels><BrushLabels name="brush" toName="image" model_path="shapes-seg.pt">'
        f'{labels(synthetic.SEGMENTATION_CLASSES)}</BrushLabels>')
    for prediction, image, objects in predicted_scenes(label_studio, yolo_backend, tmp_path, "segmentation",
                                                       config, synthetic.segmentation_scene):
        regions = prediction["result"]
        height, width = image.shape[:2]
        polygons = [r for r in regions if r["from_name"] == "poly"]
        brushes = [r for r in regions if r["from_name"] == "brush"]
        assert len(polygons) + len(brushes) == len(regions)
        assert_objects_found(polygons, objects,
                             lambda r, o: mask_iou(polygon_region_mask(r["value"], width, height), o["mask"]))
        assert_objects_found(brushes, objects,
                             lambda r, o: mask_iou(brush_region_mask(r["value"], width, height), o["mask"]))
        assert all((r["original_width"], r["original_height"]) == (width, height) for r in brushes)


def test_choices_stored(label_studio, yolo_backend, tmp_path):
    config = image_config(f'<Choices name="shape" toName="image" model_path="shapes-cls.pt">'
                          f'{labels(synthetic.CLASSIFICATION_CLASSES, "Choice")}</Choices>')
    truth, paths = {}, []
    for i, label in enumerate(synthetic.CLASSIFICATION_CLASSES):
        image, label = synthetic.classification_image(SEEDS[i], label=label)
        paths.append(save_image(image, str(tmp_path / f"cls{i}.png")))
        truth[f"cls{i}.png"] = label
    project_id, uploaded, _ = project_with_uploads(label_studio, yolo_backend, "choices", config, paths)
    stored = retrieve_all(label_studio, yolo_backend, project_id)
    for name, label in truth.items():
        (region,) = only_prediction(stored[uploaded[name]["id"]])["result"]
        assert region["type"] == "choices" and region["value"] == {"choices": [label]}


def test_oriented_boxes_stored(label_studio, yolo_backend, tmp_path):
    config = image_config('<RectangleLabels name="obb" toName="image" model_obb="true" model_path="shapes-obb.pt">'
                          f'{labels(synthetic.OBB_CLASSES)}</RectangleLabels>')
    for prediction, image, objects in predicted_scenes(label_studio, yolo_backend, tmp_path, "obb", config,
                                                       synthetic.obb_scene):
        height, width = image.shape[:2]
        regions = prediction["result"]
        assert all("rotation" in r["value"] for r in regions)
        assert_objects_found(regions, objects, lambda r, o: mask_iou(
            polygon_mask(rotated_region_corners_px(r["value"], width, height), width, height),
            polygon_mask(o["corners"], width, height)))


POSE_POINTS = {"nose": 0, "left_eye": 1, "right_eye": 2, "left_shoulder": 5, "right_shoulder": 6}


def test_keypoints_of_the_real_pose_model_stored(label_studio, yolo_backend, e2e_model_root):
    """The COCO pose model on Ultralytics' bus.jpg and zidane.jpg: what Label Studio stores is what
    the model finds when run directly, converted to percent and linked to hidden parent boxes."""
    import ultralytics
    from ultralytics import YOLO as UltralyticsYOLO

    points = "".join(f'<Label value="{name}" predicted_values="person" model_index="{i}"/>'
                     for name, i in POSE_POINTS.items())
    config = image_config(f'<KeyPointLabels name="kp" toName="image" model_path="yolo11n-pose.pt" '
                          f'model_score_threshold="0.5">{points}</KeyPointLabels>'
                          '<RectangleLabels name="kp_bbox" toName="image" model_skip="true"><Label value="person"/>'
                          '</RectangleLabels>')
    assets = os.path.join(os.path.dirname(ultralytics.__file__), "assets")
    paths = [os.path.join(assets, "bus.jpg"), os.path.join(assets, "zidane.jpg")]
    project_id, uploaded, _ = project_with_uploads(label_studio, yolo_backend, "pose", config, paths)
    stored = retrieve_all(label_studio, yolo_backend, project_id)

    model = UltralyticsYOLO(os.path.join(e2e_model_root, "yolo11n-pose.pt"))
    people = {}
    for path in paths:
        name = os.path.basename(path)
        (direct,) = model.predict(path, conf=0.5, verbose=False)
        height, width = direct.orig_shape
        regions = only_prediction(stored[uploaded[name]["id"]])["result"]
        boxes = [r for r in regions if r["type"] == "rectanglelabels"]
        people[name] = len(boxes)
        assert len(boxes) == len(direct.boxes)
        assert all(b["hidden"] and b["from_name"] == "kp_bbox" for b in boxes)
        for xyxy, keypoints in zip(direct.boxes.xyxy.tolist(), direct.keypoints.xy.tolist()):
            parent = max(boxes, key=lambda b: box_iou(region_box_px(b["value"], width, height), xyxy))
            assert box_iou(region_box_px(parent["value"], width, height), xyxy) >= 0.9
            children = {r["value"]["keypointlabels"][0]: r["value"] for r in regions if r.get("parentID") == parent["id"]}
            assert set(children) == set(POSE_POINTS)
            for label, index in POSE_POINTS.items():
                x, y = keypoints[index]
                assert abs(children[label]["x"] / 100 * width - x) <= 0.01 * width, (name, label)
                assert abs(children[label]["y"] / 100 * height - y) <= 0.01 * height, (name, label)
    assert people["bus.jpg"] >= 3 and people["zidane.jpg"] == 2


# ----- one broken task ----------------------------------------------------------------------------

def test_broken_tasks_do_not_cost_the_batch_its_predictions(label_studio, yolo_backend, tmp_path):
    scenes = write_scenes(tmp_path, synthetic.detection_scene, "ok", seeds=SEEDS[:3])
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    project_id, uploaded, _ = project_with_uploads(label_studio, yolo_backend, "broken", DETECTION_CONFIG,
                                                   [p for p, _, _ in scenes.values()] + [str(corrupt)])
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        dead_url = f"http://127.0.0.1:{closed.getsockname()[1]}/gone.png"
    import_tasks(label_studio, project_id, [{"image": f"/data/upload/{project_id}/missing.png"}, {"image": dead_url}])

    stored = retrieve_all(label_studio, yolo_backend, project_id)
    assert len(stored) == 6
    for name, (_, image, objects) in scenes.items():
        prediction = only_prediction(stored[uploaded[name]["id"]])
        height, width = image.shape[:2]
        assert_objects_found(prediction["result"], objects,
                             lambda r, o: box_iou(region_box_px(r["value"], width, height), o["xyxy"]))
    broken = [task for task in stored.values() if task["id"] not in {t["id"] for t in uploaded.values()}]
    broken.append(stored[uploaded["corrupt.png"]["id"]])
    for task in broken:
        # Label Studio stores the error entry as an empty prediction of this version
        prediction = only_prediction(task)
        assert (prediction["result"], prediction["score"], prediction["model_version"]) == ([], 0, VERSION)
    log = yolo_backend.log(0)
    for needle in ("corrupt.png", f"/data/upload/{project_id}/missing.png", dead_url):
        assert needle in log, needle


# ----- training and webhooks ----------------------------------------------------------------------

def test_start_training_and_annotations_reach_the_backend(label_studio, yolo_backend, tmp_path):
    scenes = write_scenes(tmp_path, synthetic.detection_scene, "train", seeds=SEEDS[:1])
    project_id, uploaded, ml = project_with_uploads(label_studio, yolo_backend, "training", DETECTION_CONFIG,
                                                    [p for p, _, _ in scenes.values()])
    task_id = next(iter(uploaded.values()))["id"]

    before = backend_requests(yolo_backend.url).get("/webhook", 0)
    start_training(label_studio, ml["id"])  # Label Studio 1.23.2: a START_TRAINING webhook
    assert backend_requests(yolo_backend.url).get("/webhook", 0) == before + 1
    state = requests.get(f"{label_studio.url}/api/ml/{ml['id']}", headers=label_studio.headers, timeout=30).json()
    assert state["state"] != "ER" and not state["error_message"], state

    create_annotation(label_studio, task_id, [{
        "from_name": "label", "to_name": "image", "type": "rectanglelabels", "original_width": 320,
        "original_height": 240, "value": {"x": 10, "y": 10, "width": 30, "height": 30, "rectanglelabels": ["circle"]}}])
    # ANNOTATION_CREATED; Label Studio waits 1 s for a webhook (WEBHOOK_TIMEOUT), so it may answer first
    wait_until(lambda: backend_requests(yolo_backend.url).get("/webhook", 0) == before + 2, 30, 0.5, "annotation webhook")
    assert "/webhook" not in backend_errors(yolo_backend.url)
    assert "/train" not in backend_requests(yolo_backend.url)


def test_with_basic_auth_annotation_webhooks_train_on_what_label_studio_confirms(label_studio, e2e_model_root,
                                                                                   tmp_path):
    """Label Studio sends annotation webhooks without the Basic header; the backend asks Label
    Studio's API about them and refuses what it does not confirm."""
    credentials = ("ml-user", "ml-secret pass")
    scenes = write_scenes(tmp_path, synthetic.detection_scene, "auth", seeds=SEEDS[:1])
    model_dir = tmp_path / "model_dir"
    model_dir.mkdir()
    with yolo_backend_process(label_studio, e2e_model_root, model_dir, BASIC_AUTH_USER=credentials[0],
                              BASIC_AUTH_PASS=credentials[1]) as (backend, _):
        project_id = create_project(label_studio, "basic auth", DETECTION_CONFIG)
        (task,) = upload_files(label_studio, project_id, [p for p, _, _ in scenes.values()]).values()
        connect_model(label_studio, project_id, backend.url, basic_auth=credentials)
        annotation = create_annotation(label_studio, task["id"], [{
            "from_name": "label", "to_name": "image", "type": "rectanglelabels", "original_width": 320,
            "original_height": 240, "value": {"x": 10, "y": 10, "width": 30, "height": 30, "rectanglelabels": ["circle"]}}])
        wait_until(lambda: f"ANNOTATION_CREATED for project {project_id} confirmed by Label Studio" in backend.log(0),
                   30, 0.5, "the confirmed annotation webhook")
        assert "/webhook" not in backend_errors(backend.url, auth=credentials)

        forged = {"action": "ANNOTATION_UPDATED", "annotation": {"id": annotation["id"] + 1000, "result": []},
                  "task": task, "project": {"id": project_id}}
        response = requests.post(backend.url + "/webhook", json=forged, timeout=30)
        assert response.status_code == 403, response.text
        assert requests.get(backend.url + "/health", timeout=10).status_code == 401


# ----- video --------------------------------------------------------------------------------------

def test_video_tracks_stored(label_studio, yolo_backend, tmp_path):
    path = str(tmp_path / "shapes.mp4")
    truth = synthetic_video.tracking_video(path, frames=90, width=320, height=240)
    config = ('<View><Video name="video" value="$video"/>'
              '<VideoRectangle name="box" toName="video" model_path="shapes-det.pt"/>'
              f'<Labels name="label" toName="video">{labels(synthetic.DETECTION_CLASSES)}</Labels></View>')
    project_id, uploaded, _ = project_with_uploads(label_studio, yolo_backend, "video", config, [path])
    stored = retrieve_all(label_studio, yolo_backend, project_id)
    regions = only_prediction(stored[uploaded["shapes.mp4"]["id"]])["result"]
    tracks = {}
    for region in regions:
        assert region["type"] == "videorectangle" and region["value"]["framesCount"] == 90
        tracks.setdefault(region["value"]["labels"][0], []).append(region)
    assert {label: len(found) for label, found in tracks.items()} == {"circle": 1, "square": 1, "triangle": 1}
    for obj in truth.values():
        (track,) = tracks[obj["label"]]
        hits = 0
        for box in track["value"]["sequence"]:
            if box["frame"] in obj["boxes"]:
                x, y = box["x"] / 100 * 320, box["y"] / 100 * 240
                xyxy = (x, y, x + box["width"] / 100 * 320, y + box["height"] / 100 * 240)
                hits += box_iou(xyxy, obj["boxes"][box["frame"]]) >= 0.5
        assert hits >= 0.9 * len(obj["boxes"]), obj["label"]


def test_trainable_timeline_labels_learn_from_an_annotation(label_studio, yolo_backend, e2e_model_root, tmp_path):
    """Before any annotation the backend refuses the batch (Label Studio stores nothing and can ask
    again); an annotation submitted in Label Studio trains the classifier through the webhook;
    then Retrieve Predictions stores the learned segments."""
    train_path, similar_path = str(tmp_path / "train.mp4"), str(tmp_path / "similar.mp4")
    synthetic_video.timeline_video(train_path, [("circle", 30), ("square", 30), ("triangle", 30)], seed=11)
    truth = synthetic_video.timeline_video(similar_path, [("square", 20), ("circle", 30), ("triangle", 20),
                                                          ("square", 20)], seed=12)
    config = ('<View><Video name="video" value="$video"/>'
              '<TimelineLabels name="events" toName="video" model_path="shapes-cls.pt" model_trainable="true">'
              '<Label value="Ball"/><Label value="Box"/></TimelineLabels></View>')
    project_id, uploaded, _ = project_with_uploads(label_studio, yolo_backend, "timeline", config,
                                                   [train_path, similar_path])
    retrieve_predictions(label_studio, project_id)
    assert all(task["predictions"] == [] for task in tasks_of(label_studio, project_id))

    classifier = os.path.join(e2e_model_root, f"timelinelabels-{project_id}-shapes-cls-events.pkl")
    webhooks = backend_requests(yolo_backend.url).get("/webhook", 0)
    create_annotation(label_studio, uploaded["train.mp4"]["id"], [
        {"from_name": "events", "to_name": "video", "type": "timelinelabels", "id": f"{label}{start}",
         "value": {"ranges": [{"start": start, "end": end}], "timelinelabels": [label]}}
        for label, start, end in (("Ball", 1, 30), ("Box", 31, 60))])
    # Label Studio waits 1 s (WEBHOOK_TIMEOUT) for a webhook; training goes on after it gave up.
    wait_until(lambda: backend_requests(yolo_backend.url).get("/webhook", 0) > webhooks, 120, 0.5, "training webhook answered")
    assert os.path.isfile(classifier)

    stored = retrieve_all(label_studio, yolo_backend, project_id)
    regions = only_prediction(stored[uploaded["similar.mp4"]["id"]])["result"]
    for label, shape in (("Ball", "circle"), ("Box", "square")):
        frames = {f for r in regions if r["value"]["timelinelabels"] == [label]
                  for span in r["value"]["ranges"] for f in range(span["start"], span["end"] + 1)}
        truth_frames = set(truth[shape])
        assert len(frames & truth_frames) / len(frames | truth_frames) >= 0.7, label

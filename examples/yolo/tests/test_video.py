"""`<Video>` control tags through the HTTP API, checked against synthetic videos' ground truth:
VideoRectangle tracking and TimelineLabels (simple and trainable)."""

import logging
import os
import shutil

import pytest
import requests

import synthetic_video
from helpers import PYTHON, serve_in_process
from yolo_helpers import box_iou

YOLO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROJECT = "3.1700000000"
WIDTH, HEIGHT, FRAMES = 320, 240, 90
SHAPE_LABELS = '<Labels name="label" toName="video"><Label value="circle"/><Label value="square"/><Label value="triangle"/></Labels>'


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Every test video, written once for the module."""
    root = tmp_path_factory.mktemp("videos")
    paths = {name: str(root / f"{name}.mp4") for name in ("shapes", "timeline", "train", "similar", "zidane")}
    return {
        "paths": paths,
        "shapes": synthetic_video.tracking_video(paths["shapes"], frames=FRAMES, width=WIDTH, height=HEIGHT),
        "timeline": synthetic_video.timeline_video(paths["timeline"], [("circle", 30), ("square", 30), ("triangle", 30)]),
        "train": synthetic_video.timeline_video(paths["train"], [("circle", 30), ("square", 30), ("triangle", 30)], seed=11),
        "similar": synthetic_video.timeline_video(
            paths["similar"], [("square", 20), ("circle", 30), ("triangle", 20), ("square", 20)], seed=12),
        "zidane": synthetic_video.zidane_pan_video(paths["zidane"]),
        "garbage": synthetic_video.not_a_video(str(root / "notes.mp4")),
    }


@pytest.fixture(scope="module")
def video_model_root(model_root, tmp_path_factory):
    """Copies of the weights these tests use (copies, because MODEL_ROOT refuses links to files outside it)."""
    root = tmp_path_factory.mktemp("video_models")
    for name in ("shapes-det.pt", "shapes-cls.pt", "yolo11n-pose.pt"):
        shutil.copy(os.path.join(model_root, name), root / name)
    return root


@pytest.fixture
def yolo_settings(yolo_settings, video_model_root):
    return yolo_settings.replace(model_root=str(video_model_root))


@pytest.fixture
def server(yolo_server):
    """The backend serving the videos' weights."""
    return yolo_server


@pytest.fixture
def own_model_root(video_model_root, tmp_path):
    """A private MODEL_ROOT for a test that writes tracker YAMLs or classifiers into it."""
    root = tmp_path / "own_model_root"
    root.mkdir()
    for name in ("shapes-det.pt", "shapes-cls.pt"):
        shutil.copy(video_model_root / name, root / name)
    return root


@pytest.fixture
def own_server(serve_yolo, yolo_settings, own_model_root):
    """The backend serving from the test's private MODEL_ROOT."""
    with serve_yolo(yolo=yolo_settings.replace(model_root=str(own_model_root))) as base:
        yield base


def post(base, path, body):
    return requests.post(base + path, json=body, timeout=120)


def predict(base, config, tasks, project=PROJECT):
    return post(base, "/predict", {"tasks": tasks, "label_config": config, "project": project, "params": {}})


def results_of(response):
    assert response.status_code == 200, response.text
    return response.json()["results"]


def video_config(controls, video_name="video"):
    return f'<View><Video name="{video_name}" value="$video"/>{controls}</View>'


def tracking_config(attrs="", model="shapes-det.pt"):
    return video_config(f'<VideoRectangle name="box" toName="video" model_path="{model}" {attrs}/>{SHAPE_LABELS}')


def tracks_by_label(regions):
    out = {}
    for region in regions:
        out.setdefault(region["value"]["labels"][0], []).append(region)
    return out


def overlap_fraction(region, truth_boxes):
    """Fraction of the frames where the object is visible that the track covers with IoU >= 0.5."""
    hits = 0
    for box in region["value"]["sequence"]:
        truth = truth_boxes.get(box["frame"])
        if truth is None:
            continue
        x, y = box["x"] / 100 * WIDTH, box["y"] / 100 * HEIGHT
        xyxy = (x, y, x + box["width"] / 100 * WIDTH, y + box["height"] / 100 * HEIGHT)
        hits += box_iou(xyxy, truth) >= 0.5
    return hits / len(truth_boxes)


def frames_of(regions, label):
    frames = set()
    for region in regions:
        if region["value"]["timelinelabels"] == [label]:
            for span in region["value"]["ranges"]:
                frames.update(range(span["start"], span["end"] + 1))
    return frames


def frame_iou(found, truth):
    found, truth = set(found), set(truth)
    return len(found & truth) / len(found | truth) if found | truth else 1.0


# ----- VideoRectangle --------------------------------------------------------------------------

@pytest.mark.parametrize("tracker", ["botsort", "bytetrack"])
def test_each_object_is_one_track_matching_the_truth(server, videos, tracker):
    (prediction,) = results_of(predict(server, tracking_config(f'model_tracker="{tracker}"'),
                                       [{"id": 1, "data": {"video": videos["paths"]["shapes"]}}]))
    regions = prediction["result"]
    tracks = tracks_by_label(regions)
    assert {label: len(found) for label, found in tracks.items()} == {"circle": 1, "square": 1, "triangle": 1}
    assert len({r["id"] for r in regions}) == 3
    for name, obj in videos["shapes"].items():
        (region,) = tracks[obj["label"]]
        assert overlap_fraction(region, obj["boxes"]) >= 0.9, name
        assert (region["from_name"], region["to_name"], region["type"]) == ("box", "video", "videorectangle")
        value = region["value"]
        assert value["framesCount"] == FRAMES and value["duration"] == pytest.approx(FRAMES / synthetic_video.FPS)
        sequence = value["sequence"]
        assert [b["frame"] for b in sequence] == sorted(b["frame"] for b in sequence)
        assert all(b["rotation"] == 0 and b["time"] == pytest.approx(b["frame"] / synthetic_video.FPS) for b in sequence)
        assert sequence[-1]["enabled"] is False
        assert region["score"] == pytest.approx(max(b["score"] for b in sequence))
    # the triangle's lifespan is closed before it disappears (frames 36-45) and reopened after
    triangle = tracks["triangle"][0]["value"]["sequence"]
    gap_start, gap_end = synthetic_video.TRACKING_GAP
    assert not any(gap_start <= b["frame"] <= gap_end for b in triangle)
    assert [b["frame"] for b in triangle if not b["enabled"]] == [gap_start - 1, triangle[-1]["frame"]]
    # the square enters at frame 21 and leaves after frame 70
    square = tracks["square"][0]["value"]["sequence"]
    assert square[0]["frame"] == 21 and square[-1]["frame"] == 70  # its first box too (see TrackCollector)
    assert prediction["score"] == pytest.approx(sum(r["score"] for r in regions) / 3)


def test_override_changes_tracking(server, videos):
    task = [{"id": 1, "data": {"video": videos["paths"]["shapes"]}}]
    # a one-frame buffer cannot bridge the triangle's 10-frame gap: two tracks
    tracks = tracks_by_label(results_of(predict(server, tracking_config('botsort_track_buffer="1"'), task))[0]["result"])
    assert len(tracks["triangle"]) == 2 and len(tracks["circle"]) == 1
    first, second = sorted(tracks["triangle"], key=lambda r: r["value"]["sequence"][0]["frame"])
    assert first["value"]["sequence"][-1]["frame"] < synthetic_video.TRACKING_GAP[0] < second["value"]["sequence"][0]["frame"]
    # no detection is confident enough to start a track
    regions = results_of(predict(server, tracking_config('model_tracker="bytetrack" bytetrack_new_track_thresh="0.999"'),
                                 task))[0]["result"]
    assert regions == []


def test_bad_tracker_settings_are_400(server, videos):
    task = [{"id": 1, "data": {"video": videos["paths"]["shapes"]}}]
    response = predict(server, tracking_config('botsort_max_age="3"'), task)
    assert response.status_code == 400 and "botsort_track_buffer" in response.json()["detail"]
    response = predict(server, tracking_config('model_tracker="nope"'), task)
    assert response.status_code == 400 and "nope" in response.json()["detail"]


def test_tracker_yaml_in_model_root_by_name(own_server, videos, own_model_root):
    task = [{"id": 1, "data": {"video": videos["paths"]["shapes"]}}]
    # a custom tracker: only two keys, the rest comes from Ultralytics' bytetrack defaults
    (own_model_root / "short_memory.yaml").write_text("tracker_type: bytetrack\ntrack_buffer: 1\n")
    response = predict(own_server, tracking_config('model_tracker="short_memory"'), task)
    tracks = tracks_by_label(results_of(response)[0]["result"])
    assert len(tracks["triangle"]) == 2 and len(tracks["circle"]) == 1
    # a user botsort.yaml wins over Ultralytics' own
    (own_model_root / "botsort.yaml").write_text("tracker_type: botsort\nnew_track_thresh: 0.999\n")
    assert results_of(predict(own_server, tracking_config(), task))[0]["result"] == []


def test_non_video_fails_only_its_task(server, videos):
    tasks = [{"id": 1, "data": {"video": videos["garbage"]}},
             {"id": 2, "data": {"video": videos["paths"]["shapes"]}},
             {"id": 3, "data": {"video": "/no/such/dir/gone.mp4"}}]
    bad, good, missing = results_of(predict(server, tracking_config(), tasks))
    assert bad["result"] == [] and "notes.mp4" in bad["error"] and bad["model_version"] == good["model_version"]
    assert missing["result"] == [] and "gone.mp4" in missing["error"]
    assert len(good["result"]) == 3 and "error" not in good


def test_video_rectangle_without_labels_is_skipped_and_logged(server, videos, caplog):
    config = video_config('<VideoRectangle name="box" toName="video" model_path="shapes-det.pt"/>'
                          '<Labels name="other" toName="elsewhere"><Label value="circle"/></Labels>'
                          '<Image name="elsewhere" value="$image"/>')
    with caplog.at_level(logging.ERROR):
        (prediction,) = results_of(predict(server, config, [{"id": 1, "data": {"video": videos["paths"]["shapes"]}}]))
    assert prediction["result"] == []
    assert "no <Labels" in caplog.text


def test_real_pose_model_tracks_people_through_a_pan(server, videos):
    config = video_config('<VideoRectangle name="box" toName="video" model_path="yolo11n-pose.pt" model_tracker="bytetrack"/>'
                          '<Labels name="label" toName="video"><Label value="Player" predicted_values="person"/></Labels>')
    (prediction,) = results_of(predict(server, config, [{"id": 1, "data": {"video": videos["zidane"]}}]))
    regions = prediction["result"]
    assert all(r["value"]["labels"] == ["Player"] for r in regions)
    frames = regions[0]["value"]["framesCount"]
    long_tracks = [r for r in regions if len(r["value"]["sequence"]) >= 0.75 * frames]
    assert len(long_tracks) == 2  # the two men, followed while the camera pans
    for region in long_tracks:
        sequence = region["value"]["sequence"]
        assert sequence[-1]["x"] < sequence[0]["x"]  # the camera pans right: people drift left
        assert all(b["height"] > 50 for b in sequence)


# ----- TimelineLabels, simple mode -------------------------------------------------------------

def test_timeline_segments_cover_the_frames_of_each_class(server, videos):
    config = video_config('<TimelineLabels name="events" toName="clip" model_path="shapes-cls.pt">'
                          '<Label value="Ball" predicted_values="circle"/><Label value="SQUARE"/><Label value="triangle"/>'
                          '</TimelineLabels>', video_name="clip")
    (prediction,) = results_of(predict(server, config, [{"id": 1, "data": {"video": videos["paths"]["timeline"]}}]))
    regions = prediction["result"]
    assert len({r["id"] for r in regions}) == len(regions)
    assert all((r["from_name"], r["to_name"], r["type"]) == ("events", "clip", "timelinelabels") for r in regions)
    for label, shape in (("Ball", "circle"), ("SQUARE", "square"), ("triangle", "triangle")):
        assert frame_iou(frames_of(regions, label), videos["timeline"][shape]) >= 0.8, label
    for region in regions:
        (span,) = region["value"]["ranges"]
        assert 1 <= span["start"] <= span["end"] <= 90 and 0.5 <= region["score"] <= 1


# ----- TimelineLabels, trainable mode ----------------------------------------------------------

def trainable_config(attrs=""):
    return video_config('<TimelineLabels name="events" toName="video" model_path="shapes-cls.pt" model_trainable="true" '
                        f'{attrs}><Label value="Ball"/><Label value="Box"/></TimelineLabels>')


def annotation_webhook(config, video, action="ANNOTATION_CREATED"):
    """What Label Studio sends when a user submits a TimelineLabels annotation of `video`
    (Ball on the circle frames 1-30, Box on the square frames 31-60)."""
    def item(label, start, end):
        return {"id": f"{label}-{start}", "from_name": "events", "to_name": "video", "type": "timelinelabels",
                "origin": "manual", "value": {"ranges": [{"start": start, "end": end}], "timelinelabels": [label]}}
    return {"action": action, "project": {"id": 3, "label_config": config},
            "task": {"id": 7, "data": {"video": video}, "project": 3},
            "annotation": {"id": 70, "task": 7, "project": 3, "was_cancelled": False,
                           "result": [item("Ball", 1, 30), item("Box", 31, 60)]}}


def assert_learned(regions, truth):
    assert frame_iou(frames_of(regions, "Ball"), truth["circle"]) >= 0.7
    assert frame_iou(frames_of(regions, "Box"), truth["square"]) >= 0.7
    assert len({r["id"] for r in regions}) == len(regions)


def test_trainable_before_training_is_a_clear_error(own_server, videos, own_model_root):
    response = predict(own_server, trainable_config(), [{"id": 1, "data": {"video": videos["paths"]["similar"]}}])
    assert response.status_code == 409
    assert "train first" in response.json()["detail"] and "submit an annotation" in response.json()["detail"]


def test_trainable_learns_from_a_webhook_and_survives_a_restart(own_server, videos, own_model_root, backend_settings):
    config = trainable_config()
    response = post(own_server, "/webhook", annotation_webhook(config, videos["paths"]["train"]))
    assert response.status_code == 201, response.text
    metrics = response.json()["result"]["trained"]["events"]
    assert metrics["status"] == "trained" and metrics["reset"] is False and metrics["frames"] == 90
    assert 1 <= metrics["epochs"] <= 1000 and metrics["f1"] >= 0.95 and metrics["accuracy"] == 1.0 and "loss" in metrics
    classifier = own_model_root / "timelinelabels-3-shapes-cls-events.pkl"
    assert classifier.is_file()

    task = [{"id": 8, "data": {"video": videos["paths"]["similar"]}}]
    (prediction,) = results_of(predict(own_server, config, task))
    assert_learned(prediction["result"], videos["similar"])
    assert prediction["model_version"] == "yolo.c1", "a trained classifier is a new version of the project"

    # features of both videos are cached once, and reused by the next pass
    cache_dir = os.path.join(backend_settings.model_dir, "feature-cache")
    cached = {p: os.stat(os.path.join(cache_dir, p)).st_mtime_ns for p in os.listdir(cache_dir)}
    assert len(cached) == 2
    assert results_of(predict(own_server, config, task))[0]["result"] == prediction["result"]
    assert {p: os.stat(os.path.join(cache_dir, p)).st_mtime_ns for p in os.listdir(cache_dir)} == cached

    env = {"MODEL_ROOT": str(own_model_root), "MODEL_DIR": backend_settings.model_dir, "LABEL_STUDIO_CHECK": "false",
           "LOG_LEVEL": "WARNING"}
    with serve_in_process([PYTHON, "_wsgi.py", "-p", "{port}", "--host", "127.0.0.1"], env=env, cwd=YOLO_DIR) as (base, _):
        (restarted,) = results_of(predict(base, config, task))
    assert restarted["result"] == prediction["result"] and restarted["model_version"] == "yolo.c1"


def test_trainable_resets_when_the_network_shape_changes(own_server, videos, own_model_root):
    video = videos["paths"]["train"]
    assert post(own_server, "/webhook", annotation_webhook(trainable_config(), video)).status_code == 201
    smaller = trainable_config('model_classifier_hidden_size="8"')
    task = [{"id": 8, "data": {"video": videos["paths"]["similar"]}}]
    response = predict(own_server, smaller, task)
    assert response.status_code == 409 and "hidden_size 32 -> 8" in response.json()["detail"]

    response = post(own_server, "/webhook", annotation_webhook(smaller, video, action="ANNOTATION_UPDATED"))
    metrics = response.json()["result"]["trained"]["events"]
    assert metrics["reset"] is True and metrics["reset_reasons"] == ["hidden_size 32 -> 8"] and metrics["trainings"] == 1
    assert_learned(results_of(predict(own_server, smaller, task))[0]["result"], videos["similar"])
    # an annotation without this control's ranges trains nothing
    body = annotation_webhook(smaller, video)
    body["annotation"]["result"] = []
    assert post(own_server, "/webhook", body).json()["result"]["trained"]["events"]["status"] == "skipped"

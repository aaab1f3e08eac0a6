"""Pure pieces of the video support, without a YOLO model: tracker configs, tracks -> regions,
frame scores -> segments, annotation ranges -> targets, the timeline classifier, video reading."""

import logging
import os

import numpy as np
import pytest
import yaml

import synthetic_video
from label_studio_ml.exceptions import LabelConfigError
from utils import files
from utils import timeline_classifier as tc
from utils import tracking
from utils.detections import Target
from utils.files import content_digest
from utils.video import UnreadableVideo, VideoFrames

NAMES = {0: "circle", 1: "square", 2: "triangle"}


# ----- tracker configs -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["botsort", "bytetrack"])
def test_bundled_config_is_ultralytics_own(name, tmp_path):
    from ultralytics.utils import YAML
    from ultralytics.utils.checks import check_yaml

    assert tracking.tracker_config(name, {}, str(tmp_path)) == YAML.load(check_yaml(f"{name}.yaml"))


def test_overrides_are_typed_like_the_defaults(tmp_path):
    attrs = {"botsort_track_buffer": "60", "botsort_track_high_thresh": "0.2", "botsort_fuse_score": "false",
             "botsort_gmc_method": "none", "bytetrack_track_buffer": "5", "model_conf": "0.3", "name": "box"}
    config = tracking.tracker_config("botsort", attrs, str(tmp_path))
    assert config["track_buffer"] == 60 and isinstance(config["track_buffer"], int)
    assert config["track_high_thresh"] == 0.2
    assert config["fuse_score"] is False
    assert config["gmc_method"] == "none"
    # another tracker's overrides do not apply to this one
    assert tracking.tracker_config("bytetrack", attrs, str(tmp_path))["track_buffer"] == 5


def test_unknown_override_names_the_valid_keys(tmp_path):
    with pytest.raises(LabelConfigError) as err:
        tracking.tracker_config("bytetrack", {"bytetrack_max_age": "3"}, str(tmp_path))
    assert "max_age" in err.value.detail and "bytetrack_track_buffer" in err.value.detail


@pytest.mark.parametrize("raw", ["x", "1.5"])
def test_badly_typed_override_is_a_config_error(raw, tmp_path):
    with pytest.raises(LabelConfigError, match="track_buffer"):
        tracking.tracker_config("botsort", {"botsort_track_buffer": raw}, str(tmp_path))


def test_user_yaml_wins_by_name_and_keeps_missing_defaults(tmp_path):
    """A stale copy (a few keys) still works: the installed defaults fill in the rest."""
    (tmp_path / "botsort.yaml").write_text("tracker_type: botsort\ntrack_buffer: 7\n")
    config = tracking.tracker_config("botsort", {}, str(tmp_path))
    bundled = tracking.bundled_tracker_config("botsort")
    assert config["track_buffer"] == 7
    assert set(config) == set(bundled)


def test_custom_yaml_by_name_with_its_own_prefix(tmp_path):
    (tmp_path / "slow.yml").write_text(yaml.safe_dump({"tracker_type": "bytetrack", "match_thresh": 0.5}))
    config = tracking.tracker_config("slow", {"slow_track_buffer": "9", "bytetrack_new_track_thresh": "0.4"}, str(tmp_path))
    assert config["tracker_type"] == "bytetrack"
    assert (config["match_thresh"], config["track_buffer"], config["new_track_thresh"]) == (0.5, 9, 0.4)


def test_unknown_tracker_and_bad_yaml(tmp_path):
    with pytest.raises(LabelConfigError, match="nope"):
        tracking.tracker_config("nope", {}, str(tmp_path))
    (tmp_path / "odd.yaml").write_text("tracker_type: sorted\n")
    with pytest.raises(LabelConfigError, match="sorted"):
        tracking.tracker_config("odd", {}, str(tmp_path))
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(LabelConfigError, match="mapping"):
        tracking.tracker_config("list", {}, str(tmp_path))
    with pytest.raises(LabelConfigError):
        tracking.tracker_config("../botsort", {}, str(tmp_path))


@pytest.mark.parametrize("name, cls", [("botsort", "BOTSORT"), ("bytetrack", "BYTETracker")])
def test_build_tracker(name, cls, tmp_path):
    config = tracking.tracker_config(name, {f"{name}_track_buffer": "3"}, str(tmp_path))
    tracker = tracking.build_tracker(config, fps=25, device="cpu")
    assert type(tracker).__name__ == cls
    assert tracker.args.track_buffer == 3


def test_trackers_that_need_ultralytics_predictor_or_auto_reid_are_refused(tmp_path):
    if tracking.bundled_tracker_config("tracktrack") is not None:
        with pytest.raises(LabelConfigError, match="not supported"):
            tracking.tracker_config("tracktrack", {}, str(tmp_path))
    with pytest.raises(LabelConfigError, match="with_reid"):
        tracking.tracker_config("botsort", {"botsort_with_reid": "true"}, str(tmp_path))
    config = tracking.tracker_config("botsort", {"botsort_with_reid": "true", "botsort_model": "reid.pt"}, str(tmp_path))
    assert config["model"] == os.path.join(os.path.realpath(tmp_path), "reid.pt")


# ----- tracks -> regions -----------------------------------------------------------------------

def test_lifespans_close_before_gaps_and_at_the_end():
    boxes = [{"frame": f, "enabled": True} for f in (5, 1, 2, 3, 6, 9)]
    sequence = tracking.lifespan_sequence(boxes)
    assert [b["frame"] for b in sequence] == [1, 2, 3, 5, 6, 9]
    assert [b["enabled"] for b in sequence] == [True, True, False, True, False, False]


def test_track_label_is_the_most_frequent_mapped_class():
    label_map = {"circle": "Ball", "square": "Box"}
    assert tracking.track_label([0, 1, 1, 2, 2, 2], NAMES, label_map) == "Box"  # triangle is not mapped
    assert tracking.track_label([2, 2], NAMES, label_map) is None


def test_a_track_reported_from_its_second_frame_gets_its_first_box():
    collector = tracking.TrackCollector()
    # frame 1: track 1 reports detection 0; detections 1 (class 0) and 2 (class 1) start no track yet
    collector.add(1, np.array([[10, 10, 30, 30, 1, 0.9, 0, 0]]),
                  detections=np.array([[10, 10, 30, 30, 0.9, 0], [100, 50, 140, 90, 0.8, 0],
                                       [103, 52, 141, 91, 0.7, 1]]))
    # frame 2: the tracker reports track 2 (class 1) for the first time, moved a little
    collector.add(2, np.array([[11, 10, 31, 30, 1, 0.9, 0, 0], [104, 52, 142, 92, 2, 0.75, 1, 1]]),
                  detections=np.array([[11, 10, 31, 30, 0.9, 0], [104, 52, 142, 92, 0.75, 1]]))
    assert collector.tracks[2] == [(1, 103.0, 52.0, 141.0, 91.0, 0.7, 1), (2, 104.0, 52.0, 142.0, 92.0, 0.75, 1)]
    assert [box[0] for box in collector.tracks[1]] == [1, 2]
    # a track appearing far from every unreported detection of the frame before gets none
    collector.add(3, np.array([[300, 300, 330, 330, 3, 0.9, 0, 0]]), detections=np.array([[300, 300, 330, 330, 0.9, 0]]))
    assert [box[0] for box in collector.tracks[3]] == [3]


def test_track_regions():
    collector = tracking.TrackCollector()
    # rows: x1, y1, x2, y2, track id, score, cls, detection index
    collector.add(1, np.array([[10, 20, 50, 60, 7, 0.9, 0, 0], [0, 0, 10, 10, 8, 0.8, 2, 1]]))
    collector.add(2, np.array([[12, 20, 52, 60, 7, 0.95, 0, 1]]),
                  detections=np.array([[0, 0, 10, 10, 0.5, 2], [14, 22, 54, 62, 0.95, 0]]))
    collector.add(4, np.array([[16, 20, 56, 60, 7, 0.7, 1, 0]]))
    regions = tracking.track_regions(collector.tracks, NAMES, {"circle": "Ball", "square": "Box"},
                                     Target("box", "video", width=200, height=100), frames_count=10, duration=0.4)
    assert len(regions) == 1  # track 8 is an unmapped triangle
    region = regions[0]
    assert region["id"] == "box-track-7" and region["type"] == "videorectangle"
    assert (region["from_name"], region["to_name"]) == ("box", "video")
    value = region["value"]
    assert value["labels"] == ["Ball"] and value["framesCount"] == 10 and value["duration"] == 0.4
    first, second, third = value["sequence"]
    assert first == pytest.approx({"frame": 1, "enabled": True, "rotation": 0, "x": 5.0, "y": 20.0, "width": 20.0,
                                   "height": 40.0, "time": 0.04, "score": 0.9})
    assert (second["x"], second["y"]) == pytest.approx((7.0, 22.0))  # the matched detection's box
    assert [b["enabled"] for b in value["sequence"]] == [True, False, False]
    assert third["time"] == pytest.approx(0.16)
    assert region["score"] == pytest.approx(0.95)


# ----- timeline: scores <-> ranges -------------------------------------------------------------

@pytest.mark.parametrize("mask, expected", [
    ([], []),
    ([0, 0, 0], []),
    ([1, 1, 1], [(0, 2)]),
    ([1, 0, 1, 1, 0, 0, 1], [(0, 0), (2, 3), (6, 6)]),
])
def test_segments(mask, expected):
    assert tc.segments(mask) == expected


def test_timeline_regions():
    probs = np.array([[0.9, 0.1], [0.8, 0.5], [0.2, 0.6], [0.7, 0.1]])
    regions = tc.timeline_regions(probs, ["Ball", "Box"], 0.5, "tl", "clip")
    assert [(r["value"]["timelinelabels"], r["value"]["ranges"]) for r in regions] == [
        (["Ball"], [{"start": 1, "end": 2}]), (["Ball"], [{"start": 4, "end": 4}]), (["Box"], [{"start": 2, "end": 3}]),
    ]
    assert [r["score"] for r in regions] == pytest.approx([0.85, 0.7, 0.55])
    assert len({r["id"] for r in regions}) == 3
    assert all(r["type"] == "timelinelabels" and r["from_name"] == "tl" and r["to_name"] == "clip" for r in regions)


def test_merge_columns_keeps_mapped_labels_and_takes_the_max():
    probs = np.array([[0.1, 0.3, 0.6], [0.7, 0.2, 0.1]])
    merged, labels = tc.merge_columns(probs, NAMES, {"circle": "Round", "triangle": "Round", "square": "Box"})
    assert labels == ["Round", "Box"]
    np.testing.assert_allclose(merged, [[0.6, 0.3], [0.7, 0.2]])
    merged, labels = tc.merge_columns(probs, NAMES, {})
    assert labels == [] and merged.shape == (2, 0)


def test_ranges_to_multihot(caplog):
    result = [
        {"from_name": "tl", "value": {"ranges": [{"start": 2, "end": 3}, {"start": 9, "end": 20}], "timelinelabels": ["A"]}},
        {"from_name": "tl", "value": {"ranges": [{"start": 5, "end": 4}], "timelinelabels": ["B", "Z"]}},
        {"from_name": "other", "value": {"ranges": [{"start": 1, "end": 10}], "timelinelabels": ["A"]}},
    ]
    targets = tc.ranges_to_multihot(result, ["A", "B"], 10, "tl")
    assert targets.shape == (10, 2)
    assert np.flatnonzero(targets[:, 0]).tolist() == [1, 2, 8, 9]
    assert np.flatnonzero(targets[:, 1]).tolist() == [3, 4]
    assert "'Z'" in caplog.text


@pytest.mark.parametrize("frames, size", [(0, 16), (5, 16), (16, 16), (17, 16), (100, 16), (90, 1)])
def test_windows_cover_every_frame_with_equal_lengths(frames, size):
    spans = tc.windows(frames, size)
    covered = np.zeros(frames, bool)
    for start, end in spans:
        covered[start:end] = True
    assert covered.all()
    assert len({end - start for start, end in spans}) <= 1
    assert all(0 <= start < end <= frames for start, end in spans)


def test_f1_accuracy():
    truth = np.array([[1, 0], [1, 0], [0, 1], [0, 0]])
    assert tc.f1_accuracy(truth, truth) == (1.0, 1.0)
    f1, accuracy = tc.f1_accuracy(np.array([[1, 0], [0, 0], [0, 1], [1, 0]]), truth)
    assert f1 == pytest.approx(2 * 2 / (3 + 3)) and accuracy == pytest.approx(6 / 8)
    assert tc.f1_accuracy(np.zeros((3, 2)), np.zeros((3, 2))) == (1.0, 1.0)


def test_classifier_file_name_is_safe():
    assert tc.classifier_file_name("12", "/models/yolov8n-cls.pt", "label") == "timelinelabels-12-yolov8n-cls-label.pkl"
    assert tc.classifier_file_name("", "m.pt", "../x y") == "timelinelabels-none-m-x_y.pkl"


# ----- the classifier --------------------------------------------------------------------------

def _toy_video(seed, frames=80, dim=24):
    """Features whose first dimensions say which of two 'objects' is on screen, plus noise."""
    rng = np.random.default_rng(seed)
    targets = np.zeros((frames, 2), np.float32)
    cut = rng.integers(20, 60)
    targets[:cut, 0] = 1
    targets[cut + 5:, 1] = 1
    features = rng.normal(0, 0.3, (frames, dim)).astype(np.float32)
    features[:, :2] += targets * 3
    return features, targets


def test_classifier_learns_saves_and_reloads(tmp_path):
    spec = tc.ClassifierSpec(input_size=24, hidden_size=8, num_layers=1, sequence_size=16, labels=("A", "B"))
    classifier = tc.TimelineClassifier(spec)
    features, targets = _toy_video(1)
    metrics = classifier.fit(features, targets, epochs=300, f1_threshold=0.95, accuracy_threshold=1.0)
    assert metrics["early_stopped"] and metrics["epochs"] < 300 and metrics["frames"] == 80
    assert metrics["f1"] >= 0.95 and metrics["accuracy"] == 1.0

    other, truth = _toy_video(2)
    probs = classifier.predict_proba(other)
    assert probs.shape == (80, 2)
    assert tc.f1_accuracy(probs >= 0.5, truth > 0)[0] >= 0.9

    path = str(tmp_path / "clf.pkl")
    classifier.save(path)
    assert [p for p in os.listdir(tmp_path)] == ["clf.pkl"]  # no temp file left behind
    reloaded = tc.TimelineClassifier.load(path)
    assert reloaded.spec == spec and reloaded.trainings == 1 and reloaded.frames_seen == 80
    np.testing.assert_allclose(reloaded.predict_proba(other), probs, atol=1e-6)


def test_the_classifier_cache_reads_each_version_of_a_file_once(tmp_path, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from utils.classifier_cache import ClassifierCache

    spec = tc.ClassifierSpec(input_size=4, hidden_size=3, num_layers=1, sequence_size=4, labels=("A",))
    path = str(tmp_path / "clf.pkl")
    tc.TimelineClassifier(spec).save(path)
    reads, read = [], tc.TimelineClassifier.load
    monkeypatch.setattr(tc.TimelineClassifier, "load", staticmethod(lambda p: reads.append(p) or read(p)))
    cache = ClassifierCache()

    with ThreadPoolExecutor(4) as pool:  # concurrent first requests
        loaded = list(pool.map(lambda _: cache.get(path), range(8)))
    assert len(reads) == 1 and all(c is loaded[0] for c in loaded)
    trained = tc.TimelineClassifier(spec, trainings=1)
    trained.save(path)
    cache.put(path, trained)  # this process trained it: served as it is, not read again
    assert cache.get(path) is trained and len(reads) == 1
    tc.TimelineClassifier(spec, trainings=2).save(path)  # another worker trained it
    assert cache.get(path).trainings == 2 and len(reads) == 2
    os.remove(path)
    assert cache.get(path) is None


def test_spec_differences():
    a = tc.ClassifierSpec(1280, 32, 1, 16, ("A", "B"))
    assert a.differences(a) == []
    assert tc.ClassifierSpec(1280, 16, 1, 16, ("A",)).differences(a) == ["hidden_size 32 -> 16", "labels ('A', 'B') -> ('A',)"]


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = str(tmp_path / "f.bin")
    files.atomic_write(path, lambda f: f.write(b"old"))

    def broken(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        files.atomic_write(path, broken)
    assert open(path, "rb").read() == b"old" and os.listdir(tmp_path) == ["f.bin"]


def test_exclusive_makes_another_process_wait(tmp_path):
    """Two gunicorn workers training the same classifier file take turns."""
    import subprocess
    import sys
    import time

    target = str(tmp_path / "classifier.pt")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from utils.files import exclusive\n"
        f"with exclusive({target!r}):\n"
        "    print('locked', flush=True); time.sleep(1.5); print(repr(time.time()), flush=True)\n")],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with files.exclusive(target):
        acquired = time.time()
    released = float(holder.stdout.readline())
    assert holder.wait(10) == 0
    assert acquired >= released


def test_feature_cache_roundtrip(tmp_path):
    directory = tc.feature_cache_dir("", str(tmp_path))
    assert directory == str(tmp_path / "feature-cache")
    assert tc.feature_cache_dir("elsewhere", str(tmp_path)) == os.path.abspath("elsewhere")  # FEATURE_CACHE_DIR
    path = tc.feature_cache_path(directory, "v" * 40, "m" * 40, "clip.mp4", "yolov8n-cls.pt")
    assert os.path.dirname(path) == directory
    assert path != tc.feature_cache_path(directory, "v" * 40, "n" * 40, "clip.mp4", "yolov8n-cls.pt")
    assert tc.load_cached_features(path) is None
    features = np.arange(12, dtype=np.float16).reshape(3, 4)
    tc.save_cached_features(path, features)
    np.testing.assert_array_equal(tc.load_cached_features(path), features)


# ----- video files -----------------------------------------------------------------------------

def test_video_frames_stream_and_count(tmp_path, caplog):
    path = str(tmp_path / "v.mp4")
    synthetic_video.timeline_video(path, [("circle", 12), (None, 13)], size=64)
    with caplog.at_level(logging.INFO, logger="utils.video"), VideoFrames(path) as video:
        assert (video.fps, video.width, video.height) == (30.0, 64, 64)
        sizes = [(start, len(frames)) for start, frames in video.batches(8, log_every=10)]
    assert sizes == [(0, 8), (8, 8), (16, 8), (24, 1)]
    assert video.frames_count == 25 and video.duration == pytest.approx(25 / 30)
    assert sum("frame 10/25" in m or "frame 20/25" in m for m in caplog.messages) == 2


def test_unreadable_video_names_the_file(tmp_path):
    path = synthetic_video.not_a_video(str(tmp_path / "notes.mp4"))
    with pytest.raises(UnreadableVideo) as err:
        with VideoFrames(path) as video:
            list(video.batches(4, log_every=500))
    assert err.value.status_code == 422 and "notes.mp4" in err.value.detail
    with pytest.raises(UnreadableVideo, match="missing.mp4"):
        VideoFrames(str(tmp_path / "missing.mp4"))


def test_content_digest_is_by_content(tmp_path):
    (tmp_path / "a").write_bytes(b"same bytes")
    (tmp_path / "b").write_bytes(b"same bytes")
    (tmp_path / "c").write_bytes(b"other bytes")
    assert content_digest(str(tmp_path / "a")) == content_digest(str(tmp_path / "b")) != content_digest(str(tmp_path / "c"))

"""ONNX Runtime and OpenVINO on cached exports serve the same answers as PyTorch, fall back to it,
and `auto` picks the fastest by a race remembered beside the exports."""

import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pytest
import requests

import synthetic
from helpers import PYTHON, read_log, serve_in_process, wait_until
from label_studio_ml.exceptions import MLBackendError
import utils.inference as inference
from utils.inference import InferenceOptions, LoadedModel, registry
from utils.lanes import usable_cores
import utils.runtimes as runtimes
from utils.runtimes import (FASTEST, choose_runtime, export, export_key, exports_dir, half_precision,
                            quiet_ultralytics, race_conditions, race_path)
from yolo_helpers import mask_iou

YOLO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = [synthetic.HELDOUT_SEED_START + 40 + i for i in range(4)]
BATCH_SIZE = 8


@pytest.fixture
def exports(backend_settings) -> str:
    """The test's export cache: `MODEL_DIR/exports` of its settings."""
    return exports_dir(backend_settings.model_dir)


def scenes(scene_fn):
    """Three scenes of one size (one batch, rectangular letterbox) and one of another size."""
    images = [scene_fn(seed)[0] for seed in SEEDS[:3]]
    images.append(scene_fn(SEEDS[3], width=240, height=300)[0])
    return images


def classification_images():
    return [synthetic.classification_image(seed)[0] for seed in SEEDS]


def same_boxes(reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    """For each row of `reference` (coordinates..., confidence, class), the index of the row of
    `other` closest in coordinates: engines may order boxes of almost equal confidence differently."""
    assert len(reference) > 0, "the scene should have detections"
    assert reference.shape == other.shape
    distances = np.abs(reference[:, None, :-2] - other[None, :, :-2]).max(axis=2)
    order = distances.argmin(axis=1)
    assert len(set(order)) == len(order), "two boxes match the same one"
    return order


def assert_same_detections(reference, result, attribute: str) -> np.ndarray:
    """Box by box equal up to float rounding; the order that pairs `result`'s boxes with `reference`'s."""
    a = getattr(reference, attribute).data.cpu().numpy()
    order = same_boxes(a, getattr(result, attribute).data.cpu().numpy())
    b = getattr(result, attribute).data.cpu().numpy()[order]
    np.testing.assert_allclose(b[:, :-2], a[:, :-2], atol=0.5)   # coordinates, pixels
    np.testing.assert_allclose(b[:, -2], a[:, -2], atol=0.01)    # confidences
    np.testing.assert_array_equal(b[:, -1], a[:, -1])            # classes
    return order


def assert_same_answers(reference, result, attribute: str) -> None:
    """`result` (an Ultralytics Results) answers like `reference`, detection by detection: boxes,
    confidences, classes, masks, keypoints; or class probabilities."""
    assert result.orig_shape == reference.orig_shape
    if attribute == "probs":
        np.testing.assert_allclose(result.probs.data.cpu().numpy(), reference.probs.data.cpu().numpy(), atol=1e-3)
        return
    order = assert_same_detections(reference, result, attribute)
    if reference.masks is not None:
        for i, j in enumerate(order):
            assert mask_iou(reference.masks.data[i].cpu().numpy() > 0.5,
                            result.masks.data[j].cpu().numpy() > 0.5) > 0.98
    if reference.keypoints is not None:
        np.testing.assert_allclose(result.keypoints.xy.cpu().numpy()[order], reference.keypoints.xy.cpu().numpy(),
                                   atol=0.5)


# Every task type: its test weights, images showing what it finds, the Results attribute it fills.
TASK_CASES = [
    ("shapes-det.pt", lambda: scenes(synthetic.detection_scene), "boxes"),
    ("shapes-obb.pt", lambda: scenes(synthetic.obb_scene), "obb"),
    ("shapes-seg.pt", lambda: scenes(synthetic.segmentation_scene), "boxes"),
    ("shapes-pose.pt", lambda: scenes(synthetic.pose_scene), "boxes"),
    ("shapes-cls.pt", classification_images, "probs"),
]


@pytest.mark.parametrize("runtime", ["onnx", "openvino"])
@pytest.mark.parametrize("weights, images, attribute", TASK_CASES)
def test_exported_engine_answers_like_pytorch(exports, model_root, runtime, weights, images, attribute):
    path = os.path.join(model_root, weights)
    torch_model = LoadedModel(path, "cpu", "torch", exports)
    exported_model = LoadedModel(path, "cpu", runtime, exports)
    assert (torch_model.runtime, exported_model.runtime) == ("torch", runtime)
    assert exported_model.names == torch_model.names and exported_model.task == torch_model.task

    batch = images()
    for torch_result, exported_result in zip(torch_model.predict(batch, BATCH_SIZE),
                                             exported_model.predict(batch, BATCH_SIZE)):
        assert_same_answers(torch_result, exported_result, attribute)


def engine_threads(model, runtime: str) -> int:
    """The threads the engine of an Ultralytics model (on an export, started) was made with; 0: all."""
    backend = model.predictor.model.backend
    if runtime == "onnx":
        return backend.session.get_session_options().intra_op_num_threads
    return int(backend.ov_compiled_model.get_property("INFERENCE_NUM_THREADS"))


@pytest.mark.skipif(usable_cores() < 2, reason="lanes need two cores")
@pytest.mark.parametrize("runtime", ["onnx", "openvino"])
def test_predictions_that_queue_up_run_in_lanes_that_answer_like_the_wide_engine(exports, model_root, runtime,
                                                                                 monkeypatch):
    monkeypatch.setattr(inference, "_devices", {})  # this test's own device threads, with lanes
    model = LoadedModel(os.path.join(model_root, "shapes-seg.pt"), "cpu", runtime, exports, cpu_lanes=2)
    batch = scenes(synthetic.segmentation_scene)
    alone = [model.predict([image], BATCH_SIZE)[0] for image in batch]
    assert model._lane_models == {}, "predictions one after another run wide"

    busy, release = threading.Event(), threading.Event()
    with ThreadPoolExecutor(len(batch) + 1) as pool:
        pool.submit(model.run, lambda _: (busy.set(), release.wait(30)))  # the wide thread busy
        busy.wait(30)
        queued = [pool.submit(model.predict, [image], BATCH_SIZE) for image in batch]
        time.sleep(0.2)
        release.set()
        in_lanes = [future.result()[0] for future in queued]
    assert sorted(model._lane_models) == [0, 1], "the queue was shared by both lanes"
    cores = usable_cores()
    assert all(engine_threads(lane, runtime) == cores // 2 for lane in model._lane_models.values())
    if runtime == "onnx":
        assert engine_threads(model.model, runtime) == 0, "the wide engine keeps every core (ONNX Runtime's default)"
    for reference, result in zip(alone, in_lanes):
        assert_same_answers(reference, result, "boxes")


@pytest.mark.skipif(usable_cores() < 2, reason="lanes need two cores")
def test_a_batch_that_comes_alone_is_dealt_out_evenly_among_the_lanes(exports, model_root, monkeypatch):
    monkeypatch.setattr(inference, "_devices", {})
    model = LoadedModel(os.path.join(model_root, "shapes-pose.pt"), "cpu", "onnx", exports, cpu_lanes=2)
    batch = scenes(synthetic.pose_scene)  # three of one size, one of another
    batch.append(synthetic.pose_scene(SEEDS[0], width=240, height=300)[0])  # and a second of that other size
    alone = [model.predict([image], BATCH_SIZE)[0] for image in batch]
    shapes_by_lane = {0: [], 1: []}
    for lane in (0, 1):
        model._lane_model(lane).add_callback(
            "on_predict_batch_start", lambda predictor, lane=lane: shapes_by_lane[lane].extend(
                image.shape for image in predictor.batch[1]))
    shared = model.predict(batch, BATCH_SIZE)
    for shape in {image.shape for image in batch}:  # each lane as many of each shape, give or take one
        counts = [shapes.count(shape) for shapes in shapes_by_lane.values()]
        assert max(counts) - min(counts) <= 1 and min(counts) >= 1, shapes_by_lane
    assert [r.orig_shape for r in shared] == [r.orig_shape for r in alone], "in the order of the images"
    for reference, result in zip(alone, shared):
        assert_same_answers(reference, result, "boxes")


@pytest.mark.skipif(usable_cores() < 2, reason="lanes need two cores")
def test_a_lane_engine_that_does_not_load_leaves_the_model_predicting_wide(exports, model_root, monkeypatch, caplog):
    monkeypatch.setattr(inference, "_devices", {})
    model = LoadedModel(os.path.join(model_root, "shapes-det.pt"), "cpu", "onnx", exports, cpu_lanes=2)

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(inference, "load_export", out_of_memory)
    batch = scenes(synthetic.detection_scene)
    expected = [len(synthetic.detection_scene(seed)[1]) for seed in SEEDS[:3]]
    shared = model.predict(batch, BATCH_SIZE)  # comes alone: would be shared out among the lanes
    assert [len(result.boxes) for result in shared[:3]] == expected, "answered on the wide engine"
    assert "shapes-det.pt: no ONNX Runtime engine for lane" in caplog.text and "RuntimeError: out of memory" in caplog.text
    assert os.path.exists(model.export), "the export the wide engine runs stays"
    caplog.clear()
    assert [len(result.boxes) for result in model.predict(batch, BATCH_SIZE)[:3]] == expected
    assert "no ONNX Runtime engine" not in caplog.text, "not tried again"


@pytest.mark.parametrize("runtime, suffix", [("onnx", ".onnx"), ("openvino", "_openvino_model")])
def test_export_is_cached_under_model_dir_and_model_root_is_untouched(exports, model_root, runtime, suffix):
    path = os.path.join(model_root, "shapes-det.pt")
    root_before = sorted(os.listdir(model_root))
    LoadedModel(path, "cpu", runtime, exports)
    key = export_key(path)
    exported = next(n for n in os.listdir(exports) if n.endswith(suffix))
    assert exported.startswith("shapes-det-") and f"-{runtime}" in exported  # named by the converter's version too
    # the export and its lock file only: no temporary directory left behind
    assert sorted(os.listdir(exports)) == sorted([exported, key + ".lock"])
    first_write = os.stat(os.path.join(exports, exported)).st_mtime_ns

    again = LoadedModel(path, "cpu", runtime, exports)
    assert again.runtime == runtime
    assert sorted(os.listdir(exports)) == sorted([exported, key + ".lock"])
    assert os.stat(os.path.join(exports, exported)).st_mtime_ns == first_write  # not exported again
    assert sorted(os.listdir(model_root)) == root_before


def test_a_new_export_removes_the_exports_of_earlier_weights_of_that_file(exports, model_root):
    os.makedirs(exports)
    path = os.path.join(model_root, "shapes-det.pt")
    stale = f"{export_key(path)}-0123456789abcdef-ultralytics8.3.0.onnx"  # the file's earlier content
    other = f"{export_key(path + '2')}-0123456789abcdef-ultralytics8.3.0.onnx"  # another weights file
    for name in (stale, other):
        with open(os.path.join(exports, name), "wb") as file:
            file.write(b"old export")
    LoadedModel(path, "cpu", "onnx", exports)
    names = [n for n in os.listdir(exports) if n.endswith(".onnx")]
    assert stale not in names and other in names and len(names) == 2


def test_failed_export_falls_back_to_pytorch(backend_settings, exports, model_root, caplog):
    os.makedirs(backend_settings.model_dir, exist_ok=True)
    with open(exports, "w"):  # a file where the export directory should be: export fails
        pass
    with caplog.at_level(logging.WARNING, logger="utils.inference"):
        model = LoadedModel(os.path.join(model_root, "shapes-det.pt"), "cpu", "onnx", exports)
    assert model.runtime == "torch"
    assert "no ONNX Runtime model" in caplog.text and "PyTorch serves it instead" in caplog.text
    image, objects = synthetic.detection_scene(SEEDS[0])
    (result,) = model.predict([image], BATCH_SIZE)
    assert len(result.boxes) == len(objects)


def test_an_export_that_does_not_load_is_discarded_and_pytorch_serves(exports, model_root, caplog):
    path = os.path.join(model_root, "shapes-det.pt")
    exported = export(path, "onnx", exports)
    with open(exported, "wb") as file:
        file.write(b"not an ONNX model")
    with caplog.at_level(logging.WARNING, logger="utils.inference"):
        model = LoadedModel(path, "cpu", "onnx", exports)
    assert model.runtime == "torch" and "PyTorch serves it instead" in caplog.text
    assert not os.path.exists(exported)
    image, objects = synthetic.detection_scene(SEEDS[0])
    assert len(model.predict([image], BATCH_SIZE)[0].boxes) == len(objects)
    assert LoadedModel(path, "cpu", "onnx", exports).runtime == "onnx"  # exported anew


def test_same_file_names_in_two_folders_are_two_exports(exports, model_root, tmp_path):
    root = tmp_path / "root"
    for folder, weights in (("a", "shapes-det.pt"), ("b", "shapes-seg.pt")):
        (root / folder).mkdir(parents=True)
        os.symlink(os.path.join(model_root, weights), root / folder / "best.pt")
    first = LoadedModel(str(root / "a" / "best.pt"), "cpu", "onnx", exports)
    second = LoadedModel(str(root / "b" / "best.pt"), "cpu", "onnx", exports)
    assert len([n for n in os.listdir(exports) if n.endswith(".onnx")]) == 2
    image, objects = synthetic.detection_scene(SEEDS[0])
    assert len(first.predict([image], BATCH_SIZE)[0].boxes) == len(objects)  # its export is still there
    assert second.predict([image], BATCH_SIZE)[0].masks is not None


def test_concurrent_loads_export_once(exports, model_root, caplog):
    from concurrent.futures import ThreadPoolExecutor

    path = os.path.join(model_root, "shapes-pose.pt")
    with caplog.at_level(logging.INFO, logger="utils.runtimes"), ThreadPoolExecutor(3) as pool:
        exported = list(pool.map(lambda _: export(path, "openvino", exports), range(3)))
    assert len(set(exported)) == 1 and os.path.isdir(exported[0])
    assert caplog.text.count("Exported shapes-pose.pt for OpenVINO") == 1


def test_quiet_ultralytics_drops_only_this_threads_info_lines():
    import threading

    ultralytics_logger = logging.getLogger("ultralytics")
    seen = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = lambda record: seen.append(record.getMessage())
    ultralytics_logger.addHandler(handler)
    level = ultralytics_logger.level
    ultralytics_logger.setLevel(logging.INFO)
    try:
        with quiet_ultralytics():
            ultralytics_logger.info("export report")
            ultralytics_logger.warning("export warning")
            other = threading.Thread(target=ultralytics_logger.info, args=("another request",))
            other.start()
            other.join()
        ultralytics_logger.info("after")
    finally:
        ultralytics_logger.removeHandler(handler)
        ultralytics_logger.setLevel(level)
    expected = ["export warning", "another request", "after"]
    assert len(seen) == 3 and all(m.endswith(e) for m, e in zip(seen, expected)), seen  # warnings get a prefix


def test_runtime_choice(monkeypatch):
    assert choose_runtime("m.pt", "cpu", "auto") == FASTEST
    assert choose_runtime("m.pt", "cuda:0", "auto") == "torch"
    assert choose_runtime("m.onnx", "cpu", "auto") == "native"
    assert choose_runtime("m.pt", "cpu", "torch") == "torch"
    assert choose_runtime("m.pt", "cuda:0", "onnx") == "onnx"
    assert choose_runtime("m.pt", "cpu", "openvino") == "openvino"
    monkeypatch.setattr(runtimes, "engine_available", lambda runtime: runtime == "torch")
    with pytest.raises(MLBackendError, match="YOLO_RUNTIME=openvino, but openvino is not installed"):
        choose_runtime("m.pt", "cpu", "openvino")
    with pytest.raises(MLBackendError, match="YOLO_RUNTIME='tensorrt' is not one of auto, torch, onnx, openvino"):
        choose_runtime("m.pt", "cpu", "tensorrt")


def test_half_precision_only_on_cuda_when_asked():
    assert not half_precision("cuda:0", False)
    assert half_precision("cuda:0", True) and half_precision("cuda", True) and not half_precision("cpu", True)


def test_registry_keeps_one_model_per_runtime(exports, model_root):
    path = os.path.join(model_root, "shapes-cls.pt")
    auto_options = InferenceOptions(device="cpu", runtime="auto", half=False, batch_size=BATCH_SIZE,
                                    exports_dir=exports)
    torch_options = replace(auto_options, runtime="torch")
    assert registry.get(path, torch_options).runtime == "torch"
    served = registry.get(path, auto_options)
    assert served.runtime in ("onnx", "openvino")  # whichever won the race on this machine
    assert registry.get(path, auto_options, pytorch=True).runtime == "torch"  # for code inside the network
    assert registry.get(path, auto_options) is served


def engine_of(model) -> str:
    """Which engine an Ultralytics model runs, told by the file it was loaded from."""
    source = str(model.model_name).rstrip("/")
    return "onnx" if source.endswith(".onnx") else "openvino" if source.endswith("_openvino_model") else "torch"


@pytest.fixture
def race_timings(monkeypatch):
    """The race run in this process and timed by fixed figures (ms per predict, per engine; `calls`
    lists the engines timed, turn by turn), so that which engine wins does not depend on this
    machine's load."""
    monkeypatch.setattr(runtimes, "race_in_child", runtimes.race_here)
    ms = {"torch": 9.0, "onnx": 4.0, "openvino": 2.0}
    calls = []

    def seconds(model, *args):
        calls.append(engine_of(model))
        return ms[engine_of(model)] / 1000

    monkeypatch.setattr(runtimes, "timed_predict", seconds)
    return ms, calls


def test_auto_races_the_engines_once_and_serves_the_fastest(exports, model_root, race_timings, caplog):
    ms, calls = race_timings
    path = os.path.join(model_root, "shapes-det.pt")
    with caplog.at_level(logging.INFO, logger="utils.runtimes"):
        model = LoadedModel(path, "cpu", FASTEST, exports)
    turns = runtimes.RACE_WARMUP_TURNS + runtimes.RACE_TURNS
    assert model.runtime == "openvino" and calls == ["torch", "onnx", "openvino"] * turns  # in turns
    assert engine_of(model.model) == "openvino"
    with open(race_path(path, exports)) as file:
        race = json.load(file)
    assert race["fastest"] == "openvino" and race["ms_per_predict"] == ms and race["imgsz"] == 192
    assert "PyTorch 9.0, ONNX Runtime 4.0, OpenVINO 2.0: OpenVINO serves it" in caplog.text
    image, objects = synthetic.detection_scene(SEEDS[0])
    assert len(model.predict([image], BATCH_SIZE)[0].boxes) == len(objects)

    assert LoadedModel(path, "cpu", FASTEST, exports).runtime == "openvino"  # remembered: no second race
    assert len(calls) == 3 * turns


@pytest.mark.parametrize("failing", ["load", "timed_predict"])
def test_a_failing_engine_is_left_out_of_the_race_with_the_reason(exports, model_root, race_timings, monkeypatch,
                                                                   caplog, failing):
    original = runtimes.exported_model if failing == "load" else runtimes.timed_predict

    def without_openvino(*args):
        if "openvino" in (args[2] if failing == "load" else engine_of(args[0])):
            raise RuntimeError("no OpenVINO on this CPU")
        return original(*args)

    monkeypatch.setattr(runtimes, "exported_model" if failing == "load" else "timed_predict", without_openvino)
    with caplog.at_level(logging.INFO, logger="utils.runtimes"):
        model = LoadedModel(os.path.join(model_root, "shapes-pose.pt"), "cpu", FASTEST, exports)
    assert model.runtime == "onnx"
    assert "shapes-pose.pt: OpenVINO skipped: RuntimeError: no OpenVINO on this CPU" in caplog.text


def test_a_race_run_on_another_machine_is_run_again(exports, model_root, race_timings):
    _, calls = race_timings
    path = os.path.join(model_root, "shapes-cls.pt")
    os.makedirs(exports)
    here = race_conditions()
    elsewhere = {**here, "cores": here["cores"] + 1}
    with open(race_path(path, exports), "w") as file:
        json.dump({"fastest": "torch", "conditions": here}, file)
    assert LoadedModel(path, "cpu", FASTEST, exports).runtime == "torch" and calls == []  # remembered
    with open(race_path(path, exports), "w") as file:
        json.dump({"fastest": "torch", "conditions": elsewhere}, file)
    assert LoadedModel(path, "cpu", FASTEST, exports).runtime == "openvino"
    assert set(calls) == {"torch", "onnx", "openvino"}


def test_the_race_runs_in_a_process_of_its_own_and_logs_here(exports, model_root, caplog, monkeypatch):
    """Real engines, really timed: whichever wins here serves, the losers never ran in this process,
    and the race's lines (its exports, its figures) are in this process's log."""
    ran_here = []
    monkeypatch.setattr(runtimes, "timed_predict", lambda model, *args: ran_here.append(model))
    monkeypatch.setattr(runtimes, "race_here", lambda *args: ran_here.append(args))
    path = os.path.join(model_root, "shapes-det.pt")
    with caplog.at_level(logging.INFO, logger="utils.runtimes"):
        model = LoadedModel(path, "cpu", FASTEST, exports)
    assert ran_here == [], "nothing of the race ran in this process"
    with open(race_path(path, exports)) as file:
        race = json.load(file)
    assert set(race["ms_per_predict"]) == {"torch", "onnx", "openvino"} and all(race["ms_per_predict"].values())
    assert model.runtime == race["fastest"] == min(race["ms_per_predict"], key=race["ms_per_predict"].get)
    assert "Exporting shapes-det.pt for OpenVINO" in caplog.text and "serves it (remembered in" in caplog.text
    image, objects = synthetic.detection_scene(SEEDS[0])
    assert len(model.predict([image], BATCH_SIZE)[0].boxes) == len(objects)


def test_a_race_that_dies_leaves_pytorch_serving_and_is_run_again_next_time(exports, model_root, caplog, monkeypatch):
    from concurrent.futures.process import BrokenProcessPool

    def dies(*args):
        raise BrokenProcessPool("A process in the process pool was terminated abruptly")

    monkeypatch.setattr(runtimes, "race_in_child", dies)
    path = os.path.join(model_root, "shapes-det.pt")
    assert LoadedModel(path, "cpu", FASTEST, exports).runtime == "torch"
    assert "shapes-det.pt: the race of engines failed (BrokenProcessPool" in caplog.text
    assert not os.path.exists(race_path(path, exports)), "not remembered: the next load races again"


def test_preload_models_loads_them_at_start_up_and_logs_the_ones_it_cannot(model_root, tmp_path):
    env = {"MODEL_ROOT": model_root, "MODEL_DIR": str(tmp_path / "model_dir"), "LABEL_STUDIO_CHECK": "false",
           "PRELOAD_MODELS": "shapes-det.pt, missing.pt", "DEVICE": "cpu", "YOLO_RUNTIME": "auto"}
    log = str(tmp_path / "server.log")
    with serve_in_process([PYTHON, "_wsgi.py", "-p", "{port}", "--host", "127.0.0.1"], env=env, cwd=YOLO_DIR,
                          log_path=log) as (base, _):
        loaded = wait_until(lambda: requests.get(base + "/health", timeout=5).json()["loaded_models"], 60)
        assert loaded in (["shapes-det.pt@cpu/onnx"], ["shapes-det.pt@cpu/openvino"])  # without any /predict
        wait_until(lambda: "PRELOAD_MODELS: missing.pt not loaded" in read_log(log, 0), 30)
        assert requests.get(base + "/health", timeout=5).status_code == 200

"""ONNX Runtime on a cached export serves the same answers as PyTorch, and falls back to it."""

import logging
import os

import numpy as np
import pytest
import requests

import synthetic
from helpers import PYTHON, read_log, serve_in_process, wait_until
from label_studio_ml.exceptions import MLBackendError
from utils.models import LoadedModel, registry
from utils.runtimes import choose_runtime, export_key, exports_dir, onnx_export, quiet_ultralytics
from yolo_helpers import mask_iou

YOLO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = [synthetic.HELDOUT_SEED_START + 40 + i for i in range(4)]


def scenes(scene_fn):
    """Three scenes of one size (one batch, rectangular letterbox) and one of another size."""
    images = [scene_fn(seed)[0] for seed in SEEDS[:3]]
    images.append(scene_fn(SEEDS[3], width=240, height=300)[0])
    return images


def classification_images():
    return [synthetic.classification_image(seed)[0] for seed in SEEDS]


def by_confidence(data: np.ndarray, conf_column: int) -> np.ndarray:
    return data[np.argsort(-data[:, conf_column])]


def assert_same_detections(torch_result, onnx_result, attribute: str):
    a = by_confidence(getattr(torch_result, attribute).data.cpu().numpy(), -2)
    b = by_confidence(getattr(onnx_result, attribute).data.cpu().numpy(), -2)
    assert len(a) > 0, "the scene should have detections"
    assert a.shape == b.shape
    np.testing.assert_allclose(b[:, :-2], a[:, :-2], atol=0.5)   # coordinates, pixels
    np.testing.assert_allclose(b[:, -2], a[:, -2], atol=0.01)    # confidences
    np.testing.assert_array_equal(b[:, -1], a[:, -1])            # classes


@pytest.mark.parametrize("weights, images, attribute", [
    ("shapes-det.pt", lambda: scenes(synthetic.detection_scene), "boxes"),
    ("shapes-obb.pt", lambda: scenes(synthetic.obb_scene), "obb"),
    ("shapes-seg.pt", lambda: scenes(synthetic.segmentation_scene), "boxes"),
    ("shapes-pose.pt", lambda: scenes(synthetic.pose_scene), "boxes"),
    ("shapes-cls.pt", classification_images, "probs"),
])
def test_onnx_runtime_answers_like_pytorch(yolo_env, model_root, weights, images, attribute):
    path = os.path.join(model_root, weights)
    torch_model = LoadedModel(path, "cpu", "torch")
    onnx_model = LoadedModel(path, "cpu", "onnx")
    assert (torch_model.runtime, onnx_model.runtime) == ("torch", "onnx")
    assert onnx_model.names == torch_model.names and onnx_model.task == torch_model.task

    batch = images()
    for torch_result, onnx_result in zip(torch_model.predict(batch), onnx_model.predict(batch)):
        assert onnx_result.orig_shape == torch_result.orig_shape
        if attribute == "probs":
            np.testing.assert_allclose(onnx_result.probs.data.cpu().numpy(), torch_result.probs.data.cpu().numpy(),
                                       atol=1e-3)
            continue
        assert_same_detections(torch_result, onnx_result, attribute)
        if torch_result.masks is not None:
            order_t = np.argsort(-torch_result.boxes.conf.cpu().numpy())
            order_o = np.argsort(-onnx_result.boxes.conf.cpu().numpy())
            for i, j in zip(order_t, order_o):
                assert mask_iou(torch_result.masks.data[i].cpu().numpy() > 0.5,
                                onnx_result.masks.data[j].cpu().numpy() > 0.5) > 0.98
        if torch_result.keypoints is not None:
            a = torch_result.keypoints.xy.cpu().numpy()[np.argsort(-torch_result.boxes.conf.cpu().numpy())]
            b = onnx_result.keypoints.xy.cpu().numpy()[np.argsort(-onnx_result.boxes.conf.cpu().numpy())]
            np.testing.assert_allclose(b, a, atol=0.5)


def test_export_is_cached_under_model_dir_and_model_root_is_untouched(yolo_env, model_root):
    path = os.path.join(model_root, "shapes-det.pt")
    root_before = sorted(os.listdir(model_root))
    LoadedModel(path, "cpu", "onnx")
    key = export_key(path)
    export = next(n for n in os.listdir(exports_dir()) if n.endswith(".onnx"))
    assert export.startswith("shapes-det-")
    # the export and its lock file only: no temporary directory left behind
    assert sorted(os.listdir(exports_dir())) == sorted([export, key + ".lock"])
    first_write = os.stat(os.path.join(exports_dir(), export)).st_mtime_ns

    again = LoadedModel(path, "cpu", "onnx")
    assert again.runtime == "onnx"
    assert sorted(os.listdir(exports_dir())) == sorted([export, key + ".lock"])
    assert os.stat(os.path.join(exports_dir(), export)).st_mtime_ns == first_write  # not exported again
    assert sorted(os.listdir(model_root)) == root_before


def test_a_new_export_removes_the_exports_of_earlier_weights_of_that_file(yolo_env, model_root):
    os.makedirs(exports_dir())
    path = os.path.join(model_root, "shapes-det.pt")
    stale = f"{export_key(path)}-0123456789abcdef-ultralytics8.3.0.onnx"  # the file's earlier content
    other = f"{export_key(path + '2')}-0123456789abcdef-ultralytics8.3.0.onnx"  # another weights file
    for name in (stale, other):
        with open(os.path.join(exports_dir(), name), "wb") as file:
            file.write(b"old export")
    LoadedModel(path, "cpu", "onnx")
    names = [n for n in os.listdir(exports_dir()) if n.endswith(".onnx")]
    assert stale not in names and other in names and len(names) == 2


def test_failed_export_falls_back_to_pytorch(yolo_env, model_root, caplog):
    os.makedirs(os.environ["MODEL_DIR"], exist_ok=True)
    with open(exports_dir(), "w"):  # a file where the export directory should be: export fails
        pass
    with caplog.at_level(logging.WARNING, logger="utils.models"):
        model = LoadedModel(os.path.join(model_root, "shapes-det.pt"), "cpu", "onnx")
    assert model.runtime == "torch"
    assert "no ONNX Runtime model" in caplog.text and "PyTorch serves it instead" in caplog.text
    image, objects = synthetic.detection_scene(SEEDS[0])
    (result,) = model.predict([image])
    assert len(result.boxes) == len(objects)


def test_an_export_that_does_not_load_is_discarded_and_pytorch_serves(yolo_env, model_root, caplog):
    path = os.path.join(model_root, "shapes-det.pt")
    export = onnx_export(path)
    with open(export, "wb") as file:
        file.write(b"not an ONNX model")
    with caplog.at_level(logging.WARNING, logger="utils.models"):
        model = LoadedModel(path, "cpu", "onnx")
    assert model.runtime == "torch" and "PyTorch serves it instead" in caplog.text
    assert not os.path.exists(export)
    image, objects = synthetic.detection_scene(SEEDS[0])
    assert len(model.predict([image])[0].boxes) == len(objects)
    assert LoadedModel(path, "cpu", "onnx").runtime == "onnx"  # exported anew


def test_same_file_names_in_two_folders_are_two_exports(yolo_env, model_root, tmp_path):
    root = tmp_path / "root"
    for folder, weights in (("a", "shapes-det.pt"), ("b", "shapes-seg.pt")):
        (root / folder).mkdir(parents=True)
        os.symlink(os.path.join(model_root, weights), root / folder / "best.pt")
    first = LoadedModel(str(root / "a" / "best.pt"), "cpu", "onnx")
    second = LoadedModel(str(root / "b" / "best.pt"), "cpu", "onnx")
    assert len([n for n in os.listdir(exports_dir()) if n.endswith(".onnx")]) == 2
    image, objects = synthetic.detection_scene(SEEDS[0])
    assert len(first.predict([image])[0].boxes) == len(objects)  # its export is still there
    assert second.predict([image])[0].masks is not None


def test_concurrent_loads_export_once(yolo_env, model_root, caplog):
    from concurrent.futures import ThreadPoolExecutor

    path = os.path.join(model_root, "shapes-pose.pt")
    with caplog.at_level(logging.INFO, logger="utils.runtimes"), ThreadPoolExecutor(3) as pool:
        exports = list(pool.map(lambda _: onnx_export(path), range(3)))
    assert len(set(exports)) == 1 and os.path.isfile(exports[0])
    assert caplog.text.count("Exported shapes-pose.pt to ONNX") == 1


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
    monkeypatch.delenv("YOLO_RUNTIME", raising=False)
    assert choose_runtime("m.pt", "cpu") == "onnx"
    assert choose_runtime("m.pt", "cuda:0") == "torch"
    assert choose_runtime("m.onnx", "cpu") == "native"
    monkeypatch.setenv("YOLO_RUNTIME", "torch")
    assert choose_runtime("m.pt", "cpu") == "torch"
    monkeypatch.setenv("YOLO_RUNTIME", "onnx")
    assert choose_runtime("m.pt", "cuda:0") == "onnx"
    monkeypatch.setenv("YOLO_RUNTIME", "tensorrt")
    with pytest.raises(MLBackendError, match="YOLO_RUNTIME='tensorrt' is not one of auto, torch, onnx"):
        choose_runtime("m.pt", "cpu")


def test_registry_keeps_one_model_per_runtime(yolo_env, model_root, monkeypatch):
    path = os.path.join(model_root, "shapes-cls.pt")
    monkeypatch.setenv("YOLO_RUNTIME", "torch")
    assert registry.get(path, "cpu").runtime == "torch"
    monkeypatch.setenv("YOLO_RUNTIME", "auto")
    served = registry.get(path, "cpu")
    assert served.runtime == "onnx"
    assert registry.get(path, "cpu", pytorch=True).runtime == "torch"  # for code inside the network
    assert registry.get(path, "cpu") is served


def test_preload_models_loads_them_at_start_up_and_logs_the_ones_it_cannot(model_root, tmp_path):
    env = {"MODEL_ROOT": model_root, "MODEL_DIR": str(tmp_path / "model_dir"), "LABEL_STUDIO_CHECK": "false",
           "PRELOAD_MODELS": "shapes-det.pt, missing.pt", "DEVICE": "cpu", "YOLO_RUNTIME": "auto"}
    log = str(tmp_path / "server.log")
    with serve_in_process([PYTHON, "_wsgi.py", "-p", "{port}", "--host", "127.0.0.1"], env=env, cwd=YOLO_DIR,
                          log_path=log) as (base, _):
        loaded = wait_until(lambda: requests.get(base + "/health", timeout=5).json()["loaded_models"], 60)
        assert loaded == ["shapes-det.pt@cpu/onnx"]  # without any /predict
        wait_until(lambda: "PRELOAD_MODELS: missing.pt not loaded" in read_log(log, 0), 30)
        assert requests.get(base + "/health", timeout=5).status_code == 200

"""GPU check, for the day a CUDA device is lent: run it there with `bash gpu_check.sh` (next to it).

1. Answers: every task type's test model predicts on CUDA as on the CPU, detection by detection
   (the comparison `tests/test_runtimes.py` makes between engines). With `YOLO_HALF=true` (FP16)
   the largest differences are printed, not checked: FP16 rounding moves boxes a little.
2. Speed: our `/predict` on CUDA, 8 tasks per request against one task per request (per image),
   in FP32 and with `YOLO_HALF=true`, plus 4 concurrent clients.
3. Training: one epoch of a tiny detection model on synthetic scenes, on CUDA.

Exits 2 at once when PyTorch sees no CUDA device, 1 when the answers differ. Needs nothing from
the internet: the weights are the repository's test models, or `--weights`; by default the COCO
`yolo11n-pose.pt` when the test suite has cached it, which gives speed figures worth quoting.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
YOLO_DIR = os.path.dirname(HERE)
REPO_ROOT = os.path.dirname(os.path.dirname(YOLO_DIR))
os.environ.setdefault("YOLO_OFFLINE", "1")  # the device machine cannot reach the internet


def cuda_device() -> str:
    """`cuda:0`, or exit 2 saying why there is none (before anything slow is imported)."""
    import torch

    if not torch.cuda.is_available():
        build = f"a CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
        print(f"gpu_check: no CUDA device: torch {torch.__version__} ({build}) sees none. Run this on a machine "
              "with an NVIDIA GPU and its driver (nvidia-smi lists it).", file=sys.stderr)
        sys.exit(2)
    print(f"CUDA device: {torch.cuda.get_device_name(0)}, torch {torch.__version__} (CUDA {torch.version.cuda})")
    return "cuda:0"


def largest_differences(reference, result, attribute: str) -> str:
    """How far `result` is from `reference`: box coordinates (pixels) and confidences, or probabilities."""
    import numpy as np

    if attribute == "probs":
        difference = np.abs(result.probs.data.float().cpu().numpy() - reference.probs.data.float().cpu().numpy())
        return f"probabilities {difference.max():.4f}"
    a, b = (getattr(r, attribute).data.float().cpu().numpy() for r in (reference, result))
    if a.shape != b.shape or not len(a):
        return f"{len(b)} detections instead of {len(a)}"
    distances = np.abs(a[:, None, :-2] - b[None, :, :-2]).max(axis=2)
    b = b[distances.argmin(axis=1)]
    coordinates, confidences = np.abs(a[:, :-2] - b[:, :-2]).max(), np.abs(a[:, -2] - b[:, -2]).max()
    return f"coordinates {coordinates:.2f} px, confidences {confidences:.4f}"


def check_answers(model_root: str, device: str, exports: str) -> bool:
    """Every task type on CUDA against the CPU: FP32 checked, FP16 reported."""
    from test_runtimes import TASK_CASES, assert_same_answers
    from utils.inference import LoadedModel

    same = True
    for weights, images, attribute in TASK_CASES:
        path = os.path.join(model_root, weights)
        batch = images()
        cpu = LoadedModel(path, "cpu", "torch", exports).predict(batch, len(batch))
        cuda = LoadedModel(path, device, "torch", exports).predict(batch, len(batch))
        half = LoadedModel(path, device, "torch", exports, half=True).predict(batch, len(batch))
        try:
            for reference, result in zip(cpu, cuda):
                assert_same_answers(reference, result, attribute)
            verdict = "same answers as the CPU"
        except AssertionError as exc:
            same, verdict = False, f"DIFFERENT from the CPU: {exc}"
        fp16 = "; ".join(largest_differences(r, h, attribute) for r, h in zip(cpu, half))
        print(f"{weights}: CUDA FP32 {verdict}; FP16 largest differences per image: {fp16}")
    return same


def check_speed(weights: str, device: str, work: str) -> None:
    """`/predict` on CUDA per image: sequential, 8 tasks per request, 4 clients; FP32 and FP16."""
    from benchmark import CONFIG, benchmark_images, interleaved_per_image, served_runs
    from load import served_backend
    from ultralytics import YOLO

    root = os.path.join(work, "models")
    os.makedirs(root)
    os.symlink(weights, os.path.join(root, os.path.basename(weights)))
    tasks = [{"id": i, "data": {"image": p}} for i, p in enumerate(benchmark_images(work, 16))]
    labels = "".join(f'<Label value="{name}"/>' for name in YOLO(weights).names.values())
    config = CONFIG.format(weights=os.path.basename(weights), labels=labels)
    for half in ("false", "true"):
        env = {"MODEL_ROOT": root, "MODEL_DIR": os.path.join(work, "model_dir"), "DEVICE": device,
               "YOLO_RUNTIME": "auto", "YOLO_HALF": half, "PREDICT_CONCURRENCY": "4"}
        with served_backend(env, workers=1, threads=4, log_path=os.path.join(work, f"server-half-{half}.log")) as (
                base, _):
            runs = served_runs(base, tasks, config, 4, in_app=[])
            ms = {mode: s * 1000 for mode, s in interleaved_per_image(runs, len(tasks), 3).items()}
        print(f"{os.path.basename(weights)} /predict on CUDA, YOLO_HALF={half}: one task per request "
              f"{ms['sequential']:.1f} ms/image, 8 tasks per request {ms['8 tasks']:.1f} ms/image "
              f"(speed-up {ms['sequential'] / ms['8 tasks']:.2f} x), 4 clients {ms['clients']:.1f} ms/image")


def check_training(device: str, work: str) -> None:
    """One epoch of the tiny detection model's config on 64 synthetic scenes, on CUDA. AMP is off:
    Ultralytics' AMP check downloads weights."""
    from make_test_models import CONFIGS, write_yolo_dataset
    from ultralytics import YOLO

    data = write_yolo_dataset("detect", Path(work) / "data", n_train=64, n_val=16)
    started = time.monotonic()
    YOLO(str(CONFIGS / "shapes-det.yaml"), task="detect").train(
        data=str(data), epochs=1, imgsz=192, batch=16, device=device, workers=0, amp=False, plots=False,
        pretrained=False, project=os.path.join(work, "runs"), name="train", verbose=False)
    print(f"training: one epoch of 64 images on {device} in {time.monotonic() - started:.1f} s")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=None, help="weights for the speed check (default: the cached COCO "
                                                        "yolo11n-pose.pt, else the tiny detection test model)")
    args = parser.parse_args(argv)
    device = cuda_device()
    sys.path[:0] = [os.path.join(YOLO_DIR, "tests"), os.path.join(REPO_ROOT, "tests"), HERE, YOLO_DIR]
    from yolo_helpers import CACHE_DIR, POSE_MODEL, TEST_MODELS_DIR

    cached_pose = os.path.join(CACHE_DIR, POSE_MODEL)
    weights = os.path.abspath(args.weights or (cached_pose if os.path.isfile(cached_pose)
                                               else os.path.join(TEST_MODELS_DIR, "shapes-det.pt")))
    from label_studio_ml.settings import Settings
    from utils.ultralytics_env import prepare_ultralytics

    with tempfile.TemporaryDirectory() as work:
        prepare_ultralytics(Settings(model_dir=os.path.join(work, "model_dir")))  # before Ultralytics is imported
        same = check_answers(TEST_MODELS_DIR, device, os.path.join(work, "model_dir", "exports"))
        check_speed(weights, device, work)
        check_training(device, work)
    print("gpu_check: " + ("passed" if same else "FAILED: CUDA answers differ from the CPU's"))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

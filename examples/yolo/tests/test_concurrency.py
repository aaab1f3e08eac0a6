"""Many clients at once under gunicorn: no errors, every answer is the one for its own image,
memory stays flat, nothing is written outside MODEL_DIR / MODEL_ROOT."""

import os
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

import synthetic
from yolo_helpers import TEST_MODELS_DIR, save_image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
from load import predict, served_backend  # noqa: E402

CONFIG = ('<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image" '
          'model_path="shapes-det.pt">' + "".join(f'<Label value="{n}"/>' for n in synthetic.DETECTION_CLASSES)
          + "</RectangleLabels></View>")
CLIENTS, REQUESTS_PER_CLIENT = 8, 200


def same_prediction(a, b, tolerance=1e-3) -> bool:
    if len(a["result"]) != len(b["result"]):
        return False
    for ra, rb in zip(a["result"], b["result"]):
        va, vb = ra["value"], rb["value"]
        if va["rectanglelabels"] != vb["rectanglelabels"] or abs(ra["score"] - rb["score"]) > tolerance:
            return False
        if any(abs(va[k] - vb[k]) > tolerance for k in ("x", "y", "width", "height")):
            return False
    return True


@pytest.mark.parametrize("workers,threads", [(1, 8), (2, 4)])
def test_concurrent_clients_get_their_own_answers(tmp_path, workers, threads):
    paths = []
    for i in range(8):
        image, _ = synthetic.detection_scene(synthetic.HELDOUT_SEED_START + 100 + i)
        paths.append(save_image(image, str(tmp_path / f"img-{i}.png")))
    home = tmp_path / "home"
    home.mkdir()
    model_dir = tmp_path / "model_dir"
    env = {"MODEL_ROOT": TEST_MODELS_DIR, "MODEL_DIR": str(model_dir), "HOME": str(home),
           "PREDICT_CONCURRENCY": str(threads), "PREDICT_QUEUE_SIZE": "64"}
    with served_backend(env, workers=workers, threads=threads, log_path=str(tmp_path / "server.log")) as (base, _):
        reference = [predict(base, [{"id": i, "data": {"image": p}}], CONFIG).json()["results"][0]
                     for i, p in enumerate(paths)]
        assert all(r["result"] for r in reference)

        def client(number):
            errors, mismatches = 0, 0
            for k in range(REQUESTS_PER_CLIENT):
                index = (number * 3 + k) % len(paths)
                response = predict(base, [{"id": index, "data": {"image": paths[index]}}], CONFIG)
                if response.status_code != 200:
                    errors += 1
                elif not same_prediction(response.json()["results"][0], reference[index]):
                    mismatches += 1
            return errors, mismatches

        with ThreadPoolExecutor(CLIENTS) as pool:
            outcomes = list(pool.map(client, range(CLIENTS)))
    assert sum(e for e, _ in outcomes) == 0
    assert sum(m for _, m in outcomes) == 0
    assert list(home.iterdir()) == [], "the server wrote into HOME"


def test_short_soak_keeps_memory_flat():
    import soak

    assert soak.run(minutes=0.5, warmup_fraction=0.4, workers=1, threads=4, images=8) == 0

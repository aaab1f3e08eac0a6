"""A long video through /predict with background jobs on: answered at once, tracked by a real
`rq worker`, uploaded to (a stand-in of) Label Studio."""

import os
import subprocess
import sys
import time

import requests

import synthetic_video
from fake_label_studio import LEGACY_TOKEN, make_fake_label_studio
from helpers import REPO_ROOT, serve_in_thread
from yolo_helpers import TEST_MODELS_DIR

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
from load import YOLO_DIR, predict, served_backend  # noqa: E402

CONFIG = ('<View><Video name="video" value="$video"/><VideoRectangle name="box" toName="video" model_path="shapes-det.pt"/>'
          '<Labels name="labels" toName="video"><Label value="circle"/><Label value="square"/><Label value="triangle"/>'
          '</Labels></View>')


def test_long_video_is_answered_at_once_and_uploaded_by_a_worker(redis_url, tmp_path):
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    path = str(tmp_path / "long.mp4")
    synthetic_video.tracking_video(path, frames=90)
    short_path = str(tmp_path / "short.mp4")
    synthetic_video.tracking_video(short_path, frames=20)
    app = make_fake_label_studio()
    with serve_in_thread(app) as ls_url:
        env = {"MODEL_ROOT": TEST_MODELS_DIR, "MODEL_DIR": str(tmp_path / "model_dir"), "BACKGROUND_JOBS": "true",
               "REDIS_URL": redis_url, "CACHE_TYPE": "redis", "BACKGROUND_MIN_FRAMES": "50",
               "LABEL_STUDIO_URL": ls_url, "LABEL_STUDIO_API_KEY": LEGACY_TOKEN}
        with served_backend(env, log_path=str(tmp_path / "server.log")) as (base, _):
            predict(base, [{"id": 0, "data": {"video": short_path}}], CONFIG)  # loads the model
            started = time.monotonic()
            body = predict(base, [{"id": 1, "data": {"video": path}}], CONFIG).json()
            assert time.monotonic() - started < 1.0, "a long video must not keep Label Studio waiting"
            assert body["results"] == [[]]
            job_id = body["jobs"][0]["job_id"]
            mixed = predict(base, [{"id": 1, "data": {"video": path}}, {"id": 2, "data": {"video": short_path}}], CONFIG)
            again, short = mixed.json()["results"]
            assert again == [] and mixed.json()["jobs"] == [{"task": 1, "job_id": job_id}], "no second job for the same work"
            assert short["result"] and short["model_version"] == "yolo"  # 20 frames: predicted in the request

            worker_env = dict(os.environ, **env, PYTHONPATH=REPO_ROOT)
            with open(tmp_path / "worker.log", "wb") as log:
                worker = subprocess.Popen([sys.executable, "-m", "rq.cli", "worker", "--url", redis_url,
                                           "--with-scheduler", "--burst", "label-studio-ml"],
                                          cwd=YOLO_DIR, env=worker_env, stdout=log, stderr=subprocess.STDOUT)
                assert worker.wait(180) == 0
            status = requests.get(f"{base}/jobs/{job_id}").json()
    assert status["status"] == "finished", status
    assert status["result"]["uploaded"] == 1
    (uploaded,) = app.config["state"]["predictions"]
    assert uploaded["task"] == 1 and uploaded["model_version"] == "yolo"
    labels = sorted(r["value"]["labels"][0] for r in uploaded["result"])
    assert labels == ["circle", "square", "triangle"]
    assert all(r["value"]["framesCount"] == 90 for r in uploaded["result"])

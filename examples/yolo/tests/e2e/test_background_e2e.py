"""Background jobs against a real Label Studio: a long video enqueued through /predict is answered
at once (Label Studio stores nothing for it), a real `rq worker` predicts it and uploads the
prediction to Label Studio through the SDK, where it then appears like any other."""

import os
import subprocess
import sys
import time

import pytest
import requests

import synthetic
import synthetic_video
from checks import VERSION, labels
from helpers import start_logged, stop
from ls_api import backend_errors, backend_requests, connect_model, create_project, retrieve_predictions, tasks_of, \
    upload_files
from servers import YOLO_DIR, yolo_backend_process

pytestmark = pytest.mark.e2e

CONFIG = ('<View><Video name="video" value="$video"/>'
          '<VideoRectangle name="box" toName="video" model_path="shapes-det.pt"/>'
          f'<Labels name="label" toName="video">{labels(synthetic.DETECTION_CLASSES)}</Labels></View>')
LONG_FRAMES, SHORT_FRAMES, MIN_FRAMES = 90, 20, 50
QUEUE = "label-studio-ml"


@pytest.fixture
def background_backend(label_studio, e2e_model_root, redis_url, tmp_path):
    """A second YOLO backend (start.sh, its own port and MODEL_DIR) with background jobs on Redis.
    Yields the server and the environment a worker needs to run its jobs."""
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    model_dir = tmp_path / "bg_model_dir"
    model_dir.mkdir()
    with yolo_backend_process(label_studio, e2e_model_root, model_dir, BACKGROUND_JOBS="true", REDIS_URL=redis_url,
                              CACHE_TYPE="redis", BACKGROUND_MIN_FRAMES=MIN_FRAMES) as served:
        yield served


def run_burst_worker(env: dict, redis_url: str, log_path: str, timeout: float = 180) -> int:
    """`rq worker --with-scheduler --burst label-studio-ml` in examples/yolo, as the README starts
    workers: runs the queued jobs, then exits. Returns its exit status."""
    rq = os.path.join(os.path.dirname(sys.executable), "rq")
    command = [rq] if os.path.isfile(rq) else [sys.executable, "-m", "rq.cli"]
    process = start_logged(command + ["worker", "--url", redis_url, "--with-scheduler", "--burst", QUEUE],
                                env, log_path, cwd=YOLO_DIR)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the burst worker did not exit within {timeout:.0f} s")
    finally:
        stop(process)


def retrieve_predictions_of(ls, project_id, task_ids):
    """The Data Manager action "Retrieve Predictions" on the selected tasks."""
    response = requests.post(f"{ls.url}/api/dm/actions", headers=ls.headers, timeout=300,
                             params={"id": "retrieve_tasks_predictions", "project": project_id},
                             json={"selectedItems": {"all": False, "included": list(task_ids)}})
    assert response.status_code == 200, response.text


def stored_by_id(ls, project_id):
    return {task["id"]: task for task in tasks_of(ls, project_id)}


def test_long_video_answered_at_once_then_uploaded_to_label_studio_by_a_worker(
        label_studio, background_backend, redis_url, tmp_path):
    import redis
    from rq import Queue

    backend, env = background_backend
    long_path, short_path = str(tmp_path / "long.mp4"), str(tmp_path / "short.mp4")
    synthetic_video.tracking_video(long_path, frames=LONG_FRAMES)
    synthetic_video.tracking_video(short_path, frames=SHORT_FRAMES)
    project_id = create_project(label_studio, "background jobs", CONFIG)
    uploaded = upload_files(label_studio, project_id, [long_path, short_path])
    long_id, short_id = uploaded["long.mp4"]["id"], uploaded["short.mp4"]["id"]
    connect_model(label_studio, project_id, backend.url)

    # Retrieve Predictions on the long video: ONE /predict, answered at once (the task is only enqueued)
    started = time.monotonic()
    retrieve_predictions_of(label_studio, project_id, [long_id])
    took = time.monotonic() - started
    predict = requests.get(backend.url + "/metrics", timeout=10).json()["endpoints"]["/predict"]
    print(f"\nRetrieve Predictions (long video): {took:.2f} s in Label Studio, backend /predict "
          f"p99 {predict['latency_seconds']['p99']:.3f} s", file=sys.stderr)
    assert predict["requests"] == 1, predict
    assert predict["latency_seconds"]["p99"] < 1.0, (predict, backend.log())
    assert stored_by_id(label_studio, project_id)[long_id]["predictions"] == [], \
        "Label Studio must store nothing for the long video yet"
    queue = Queue(QUEUE, connection=redis.Redis.from_url(redis_url))
    (job_id,) = queue.job_ids
    assert job_id.startswith("predict-"), job_id
    assert requests.get(f"{backend.url}/jobs/{job_id}", timeout=10).json()["status"] == "queued"

    # Retrieve Predictions on every task: Label Studio sends both (the long one has no prediction);
    # the short video is predicted in the request, the long one is not enqueued twice
    started = time.monotonic()
    retrieve_predictions(label_studio, project_id)
    print(f"Retrieve Predictions (both videos): {time.monotonic() - started:.2f} s in Label Studio", file=sys.stderr)
    assert backend_requests(backend.url)["/predict"] == 2
    assert backend_errors(backend.url) == {}
    stored = stored_by_id(label_studio, project_id)
    assert stored[long_id]["predictions"] == [], "Label Studio must store nothing for the long video yet"
    (short,) = stored[short_id]["predictions"]
    assert short["model_version"] == VERSION and short["result"]
    assert all(r["value"]["framesCount"] == SHORT_FRAMES for r in short["result"])
    assert queue.job_ids == [job_id], "no second job for the same work"

    # a real worker runs the job and uploads the prediction to Label Studio
    worker_log = str(tmp_path / "worker.log")
    started = time.monotonic()
    status = run_burst_worker(env, redis_url, worker_log)
    with open(worker_log, encoding="utf-8", errors="replace") as f:
        log = f.read()
    print(f"burst worker: {time.monotonic() - started:.1f} s", file=sys.stderr)
    assert status == 0, log[-6000:]
    job = requests.get(f"{backend.url}/jobs/{job_id}", timeout=10).json()
    assert job["status"] == "finished", (job, log[-6000:])
    assert job["result"]["uploaded"] == 1 and job["result"]["errors"] == {}, job

    stored = stored_by_id(label_studio, project_id)
    (prediction,) = stored[long_id]["predictions"]
    assert prediction["model_version"] == VERSION
    regions = prediction["result"]
    assert all(r["type"] == "videorectangle" and (r["from_name"], r["to_name"]) == ("box", "video") for r in regions)
    assert sorted(r["value"]["labels"][0] for r in regions) == ["circle", "square", "triangle"]
    assert all(r["value"]["framesCount"] == LONG_FRAMES for r in regions)
    assert len(stored[short_id]["predictions"]) == 1

    # Label Studio now holds the current model version for both tasks: asking again sends nothing
    before = backend_requests(backend.url).get("/predict", 0)
    retrieve_predictions(label_studio, project_id)
    assert backend_requests(backend.url).get("/predict", 0) == before
    assert [len(task["predictions"]) for task in tasks_of(label_studio, project_id)] == [1, 1]

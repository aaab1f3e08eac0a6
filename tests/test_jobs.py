"""Background jobs with a real redis-server and real `rq worker` processes."""

import os
import time

import pytest
import requests

from fake_label_studio import LEGACY_TOKEN, make_fake_label_studio
from helpers import PYTHON, REPO_ROOT, serve_in_process, serve_in_thread, start_logged, stop, wait_until

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
RQ = [PYTHON, "-m", "rq.cli", "worker"]


@pytest.fixture
def fake_ls():
    app = make_fake_label_studio()
    with serve_in_thread(app) as base:
        yield base, app.config["state"]


@pytest.fixture
def job_env(redis_url, fake_ls, tmp_path):
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    base, _ = fake_ls
    return {"BACKGROUND_JOBS": "true", "REDIS_URL": redis_url, "CACHE_TYPE": "redis", "LABEL_STUDIO_URL": base,
            "LABEL_STUDIO_API_KEY": LEGACY_TOKEN, "LABEL_STUDIO_CHECK": "false", "MODEL_DIR": str(tmp_path),
            "JOB_RETRIES": "2"}


def start_worker(env, tmp_path, name):
    full_env = dict(os.environ, **env)
    full_env["PYTHONPATH"] = os.pathsep.join([REPO_ROOT, TESTS_DIR])
    # a short worker TTL makes an idle worker run its registry maintenance every few seconds
    return start_logged(RQ + ["--url", env["REDIS_URL"], "--with-scheduler", "--maintenance-interval", "2",
                              "--job-monitoring-interval", "2", "--worker-ttl", "20", "--name", name, "label-studio-ml"],
                        full_env, str(tmp_path / f"{name}.log"), cwd=TESTS_DIR)


def kill_with_work_horse(proc):
    """SIGKILL the worker and its work horse (RQ puts the horse in a session of its own)."""
    import psutil

    family = [psutil.Process(proc.pid)] + psutil.Process(proc.pid).children(recursive=True)
    assert len(family) >= 2, "the job should be running in a work horse"
    for member in family:
        member.kill()
    proc.wait(20)


def finish_with_a_worker(backend, job_id, env, tmp_path, name, timeout=60) -> dict:
    """Start a worker, wait until the job is finished, stop the worker; the job's final status."""
    worker = start_worker(env, tmp_path, name)
    try:
        return wait_until(lambda: (s := requests.get(f"{backend}/jobs/{job_id}").json())["status"] == "finished" and s,
                          timeout=timeout, interval=0.5)
    finally:
        stop(worker)


@pytest.fixture
def backend(job_env):
    command = [PYTHON, "-m", "gunicorn", "--threads", "4", "-b", "127.0.0.1:{port}", "sdk_models:long_app"]
    with serve_in_process(command, env=job_env, cwd=TESTS_DIR) as (base, _):
        yield base


def predict(base, tasks):
    return requests.post(base + "/predict", json={"tasks": tasks, "project": "7.1", "label_config": "<View/>"}, timeout=30)


def test_long_task_is_answered_at_once_and_uploaded_by_the_worker(backend, job_env, fake_ls, tmp_path):
    _, state = fake_ls
    started = time.monotonic()
    response = predict(backend, [{"id": 1, "data": {"text": "short"}},
                                 {"id": 2, "data": {"text": "long one", "long": True, "seconds": 2}}])
    assert time.monotonic() - started < 1.0
    body = response.json()
    short, long = body["results"]
    assert short["result"][0]["value"]["choices"] == ["short"]
    assert long == []  # a list of predictions per task: Label Studio stores none for it now
    (job,) = body["jobs"]
    assert job["task"] == 2
    job_id = job["job_id"]
    assert requests.get(f"{backend}/jobs/{job_id}").json()["status"] == "queued"
    # Label Studio asking again does not enqueue the same work twice
    again = predict(backend, [{"id": 2, "data": {"text": "long one", "long": True, "seconds": 2}}]).json()
    assert again["jobs"][0]["job_id"] == job_id

    status = finish_with_a_worker(backend, job_id, job_env, tmp_path, "w1")
    assert status["result"] == {"uploaded": 1, "errors": {}, "model_version": "echo-1"}
    (uploaded,) = state["predictions"]
    assert uploaded["task"] == 2 and uploaded["model_version"] == "echo-1"
    assert uploaded["result"][0]["value"]["choices"] == ["long one"] and uploaded["score"] == pytest.approx(0.8)
    metrics = requests.get(backend + "/metrics").json()
    assert metrics["jobs_finished"] == 1 and metrics["jobs_queued"] == 0


def test_start_training_is_enqueued_and_fit_runs_on_the_worker(backend, job_env, tmp_path):
    response = requests.post(backend + "/webhook", json={"action": "START_TRAINING", "project": {"id": 7, "label_config": "<View/>"}})
    assert response.status_code == 201
    job_id = response.json()["result"]["job_id"]
    status = finish_with_a_worker(backend, job_id, job_env, tmp_path, "w2")
    assert status["result"]["event"] == "START_TRAINING" and status["result"]["fit_count"] == 1
    # the state the worker wrote is the backend's state (shared Redis store)
    response = requests.post(backend + "/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": 7}})
    assert response.json()["result"]["fit_count"] == 2


def test_failed_upload_is_retried(backend, job_env, fake_ls, tmp_path):
    _, state = fake_ls
    state["fail_uploads"] = 1
    job_id = predict(backend, [{"id": 3, "data": {"text": "x", "long": True}}]).json()["jobs"][0]["job_id"]
    finish_with_a_worker(backend, job_id, job_env, tmp_path, "w3")
    assert [p["task"] for p in state["predictions"]] == [3]
    assert state["fail_uploads"] == 0


def test_worker_killed_mid_job_another_worker_finishes_it(backend, job_env, fake_ls, tmp_path):
    _, state = fake_ls
    job_id = predict(backend, [{"id": 4, "data": {"text": "slow", "long": True, "seconds": 6}}]).json()["jobs"][0]["job_id"]
    first = start_worker(job_env, tmp_path, "dies")
    try:
        wait_until(lambda: requests.get(f"{backend}/jobs/{job_id}").json()["status"] == "started", timeout=30)
    finally:
        kill_with_work_horse(first)  # the worker and its work horse die mid-job
    assert state["predictions"] == []
    # RQ declares the job abandoned once its heartbeat expires (about a minute), then retries it
    finish_with_a_worker(backend, job_id, job_env, tmp_path, "takes-over", timeout=180)
    assert [p["task"] for p in state["predictions"]] == [4]


def test_without_background_jobs_predictions_stay_synchronous_and_unknown_jobs_are_404(settings):
    from label_studio_ml.api import init_app
    from sdk_models import LongModel

    with serve_in_thread(init_app(LongModel, settings=settings)) as base:
        response = requests.get(base + "/jobs/abc")
        assert response.status_code == 404 and response.json()["detail"] == "No job abc"
        body = predict(base, [{"id": 1, "data": {"text": "x", "long": True}}]).json()
        assert body["results"][0]["result"] and "jobs" not in body


def train(base, **data):
    started = time.monotonic()
    response = requests.post(base + "/train", json={"project": {"id": 7, "label_config": "<View/>"}, **data}, timeout=30)
    assert response.status_code == 201, response.text
    assert time.monotonic() - started < 1.0  # the training runs elsewhere
    return response.json()["result"]["job_id"]


def job(base, job_id):
    return requests.get(f"{base}/jobs/{job_id}", timeout=10).json()


def test_without_background_jobs_training_runs_on_a_thread_and_jobs_shows_it(settings):
    from label_studio_ml.api import init_app
    from sdk_models import TrainingModel

    with serve_in_thread(init_app(TrainingModel, settings=settings)) as base:
        job_id = train(base, epochs=3, seconds=0.5)
        running = wait_until(lambda: (s := job(base, job_id))["status"] == "started" and s["progress"] and s, timeout=10)
        assert running["progress"]["epochs"] == 3 and running["description"] == "train"
        finished = wait_until(lambda: (s := job(base, job_id))["status"] == "finished" and s, timeout=20)
        assert finished["progress"] == {"epoch": 3, "epochs": 3}
        assert finished["result"] == {"epochs": 3, "project": "7", "label_config": "<View/>"}
        assert finished["started_at"] and finished["ended_at"]
        # the instance that trained on the thread had the server's settings (its store)
        assert TrainingModel(project_id="7", settings=settings).get("trained_epochs") == "3"

        failed_id = train(base, epochs=0)
        failed = wait_until(lambda: (s := job(base, failed_id))["status"] == "failed" and s, timeout=10)
        assert failed["error"] == "ValueError: nothing to train: epochs must be at least 1"


def test_a_thread_job_whose_process_ended_reads_as_failed(settings):
    import json
    import subprocess

    from label_studio_ml import jobs
    from label_studio_ml.store import open_store

    ended = subprocess.Popen(["true"])
    ended.wait()
    record = {"id": "thread-gone", "status": "started", "description": "x", "host": __import__("socket").gethostname(),
              "pid": ended.pid, "progress": {"epoch": 1}}
    open_store(settings).set(jobs.THREAD_JOBS_PROJECT, "job:thread-gone", json.dumps(record))
    status = jobs.job_status(settings, "thread-gone")
    assert status["status"] == "failed" and "ended before it finished" in status["error"]
    assert status["progress"] == {"epoch": 1}


@pytest.mark.parametrize("same_process", [True, False])
def test_a_thread_job_is_running_only_while_the_process_that_recorded_it_runs(settings, same_process):
    """The pid of a job's process is taken by another one (a restarted container numbers its
    processes alike): the record's start time tells them apart."""
    import json
    import socket

    from label_studio_ml import jobs
    from label_studio_ml.store import open_store

    started = jobs.process_start(os.getpid())
    assert started is not None
    record = {"id": "thread-pid", "status": "started", "description": "x", "host": socket.gethostname(),
              "pid": os.getpid(), "pid_started": started if same_process else str(int(started) - 1)}
    open_store(settings).set(jobs.THREAD_JOBS_PROJECT, "job:thread-pid", json.dumps(record))
    status = jobs.job_status(settings, "thread-pid")
    if same_process:
        assert status["status"] == "started" and "error" not in status
    else:
        assert status["status"] == "failed" and "ended before it finished" in status["error"]


def test_with_background_jobs_training_runs_on_a_worker_of_its_own_queue(job_env, tmp_path):
    command = [PYTHON, "-m", "gunicorn", "--threads", "4", "-b", "127.0.0.1:{port}", "sdk_models:training_app"]
    with serve_in_process(command, env=job_env, cwd=TESTS_DIR) as (base, _):
        job_id = train(base, epochs=2, seconds=0.2)
        assert job(base, job_id)["status"] == "queued"
        env = dict(os.environ, **job_env, PYTHONPATH=os.pathsep.join([REPO_ROOT, TESTS_DIR]))
        worker = start_logged(RQ + ["--url", job_env["REDIS_URL"], "--name", "trainer", "sdk-train"], env,
                              str(tmp_path / "trainer.log"), cwd=TESTS_DIR)
        try:
            finished = wait_until(lambda: (s := job(base, job_id))["status"] == "finished" and s, timeout=60)
        finally:
            stop(worker)
        assert finished["progress"] == {"epoch": 2, "epochs": 2}
        assert finished["result"]["epochs"] == 2 and finished["result"]["project"] == "7"


@pytest.mark.parametrize("path", ["docker-compose.yml", "examples/yolo/docker-compose.yml"])
def test_compose_scale_profile_runs_redis_and_rq_workers_from_the_same_image(path):
    import yaml

    with open(os.path.join(REPO_ROOT, path)) as f:
        services = yaml.safe_load(f)["services"]
    assert "profiles" not in services["yolo"], "the backend itself runs without the profile"
    assert services["redis"]["profiles"] == services["worker"]["profiles"] == ["scale"]
    assert services["worker"]["image"] == services["yolo"]["image"]
    assert services["worker"]["command"][:2] == ["rq", "worker"] and "label-studio-ml" in services["worker"]["command"]
    assert services["worker"]["environment"] == services["yolo"]["environment"]
    assert services["yolo"]["environment"]["REDIS_URL"].endswith("redis://redis:6379/0}")

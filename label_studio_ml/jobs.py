"""Background jobs on RQ for work longer than Label Studio waits (100 s for `/predict`).

Enabled with `BACKGROUND_JOBS=true` and a Redis at `REDIS_URL`; `rq worker --with-scheduler
label-studio-ml` processes, started in the backend's directory, run the jobs:
- a task the model marks as long (`LabelStudioMLBase.runs_in_background`) is answered at once
  with an empty result and a `job_id`; the worker predicts it and uploads the prediction to Label
  Studio through the SDK (`predictions.create`, with `model_version`);
- `START_TRAINING` enqueues `fit` and answers the job id at once (a model whose `fit` submits its
  own jobs, `TRAINS_IN_BACKGROUND`, is called in the request instead).
Failed jobs are retried (`JOB_RETRIES`, with backoff); a job whose worker died is found by the
next worker's registry maintenance and retried; nothing is lost. `/jobs/<id>` shows a job.
Without `BACKGROUND_JOBS`, predictions stay synchronous.

`submit` is for work that must never run in a request whatever the settings (a training): an RQ
job with `BACKGROUND_JOBS`, else a daemon thread of this process whose state is a record in the
per-project store (shared by gunicorn workers), so `/jobs/<id>` answers the same shape either way.
Inside such work, `report_progress` publishes how far it got (RQ job meta, or the record).
"""

import functools
import hashlib
import importlib
import json
import logging
import os
import socket
import threading
import uuid
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Optional, Tuple

from .settings import Settings
from .store import open_store

logger = logging.getLogger(__name__)

_ACTIVE_STATES = ("queued", "started", "deferred", "scheduled")
_queues: Dict[tuple, Any] = {}
_queues_lock = threading.Lock()
# In-process jobs (no BACKGROUND_JOBS): records in the store under this project name.
THREAD_JOBS_PROJECT = "_jobs"
# The in-process job this code runs in: the settings of the server that submitted it, and its id.
_thread_job: ContextVar[Optional[Tuple[Settings, str]]] = ContextVar("thread_job", default=None)


def get_queue(settings: Settings, name: Optional[str] = None):
    """The RQ queue `name` (default `JOBS_QUEUE`) on `REDIS_URL` (one per URL, name and process)."""
    from redis import Redis
    from rq import Queue

    url, name = settings.redis_url, name or settings.jobs_queue
    with _queues_lock:
        if (url, name) not in _queues:
            _queues[url, name] = Queue(name, connection=Redis.from_url(url, socket_timeout=10))
        return _queues[url, name]


def model_reference(model_class: type) -> str:
    """`module:Class` of a model class, importable by a worker started in the backend's directory."""
    return f"{model_class.__module__}:{model_class.__qualname__}"


def load_model_class(reference: str) -> type:
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


def stable_job_id(kind: str, *parts: Any) -> str:
    """The same work gets the same id, so Label Studio asking twice does not enqueue it twice."""
    digest = hashlib.sha1("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:20]
    return f"{kind}-{digest}"


def enqueue(settings: Settings, func, *args, job_id: Optional[str] = None, description: str = "",
            queue_name: Optional[str] = None, retries: Optional[int] = None, timeout: Optional[int] = None) -> str:
    """Enqueue `func(*args)` unless a job with `job_id` is already waiting, running or done.
    Defaults: the `JOBS_QUEUE` queue, `JOB_RETRIES` retries, `JOB_TIMEOUT` seconds."""
    from rq import Retry
    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    queue = get_queue(settings, queue_name)
    if job_id:
        try:
            existing = Job.fetch(job_id, connection=queue.connection)
            if existing.get_status() in _ACTIVE_STATES + ("finished",):
                return job_id
        except NoSuchJobError:
            pass
    retries = settings.job_retries if retries is None else retries
    job = queue.enqueue(
        func, *args, job_id=job_id, description=description,
        retry=Retry(max=retries, interval=[10, 60, 300][:max(retries, 1)]) if retries > 0 else None,
        job_timeout=timeout or settings.job_timeout, result_ttl=settings.job_result_ttl,
        failure_ttl=settings.job_result_ttl,
    )
    logger.info("Enqueued job %s on %s: %s", job.id, queue.name, description)
    return job.id


def job_status(settings: Settings, job_id: str) -> Optional[dict]:
    """`{"id", "status", "description", ..., "progress", "result" | "error"}` of a job run in this
    deployment (an in-process one, or with `BACKGROUND_JOBS` an RQ one); None if unknown."""
    record = _thread_job_record(settings, job_id)
    if record is not None or not settings.background_jobs:
        return record
    return _rq_job_status(settings, job_id)


def is_active(status: Optional[dict]) -> bool:
    """Whether a job (its `job_status`) is still waiting or running."""
    return bool(status) and status["status"] in _ACTIVE_STATES


def _rq_job_status(settings: Settings, job_id: str) -> Optional[dict]:
    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    try:
        job = Job.fetch(job_id, connection=get_queue(settings).connection)
    except NoSuchJobError:
        return None
    status = job.get_status()
    info = {
        "id": job.id, "status": str(status.value if hasattr(status, "value") else status),
        "description": job.description, "retries_left": job.retries_left,
        "enqueued_at": job.enqueued_at.isoformat() if job.enqueued_at else None,
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "ended_at": job.ended_at.isoformat() if job.ended_at else None,
        "progress": job.meta.get("progress"),
    }
    if info["status"] == "finished":
        info["result"] = job.return_value()
    if info["status"] == "failed" and job.exc_info:
        info["error"] = job.exc_info.strip().splitlines()[-1]
    return info


# ----- work that never runs in a request ----------------------------------------------------------

def submit(settings: Settings, func: Callable, *args, description: str = "", queue_name: Optional[str] = None,
           retries: int = 0, timeout: Optional[int] = None) -> str:
    """Run `func(*args)` in the background and return its job id at once: an RQ job on
    `queue_name` (default `JOBS_QUEUE`) with `BACKGROUND_JOBS` (a worker imports `func` by name),
    else a daemon thread of this process. `func` may call `report_progress`; its return value is
    the job's result."""
    if settings.background_jobs:
        return enqueue(settings, func, *args, description=description, queue_name=queue_name, retries=retries,
                       timeout=timeout)
    job_id = f"thread-{uuid.uuid4().hex[:20]}"
    _save_thread_job(settings, {"id": job_id, "status": "queued", "description": description, "enqueued_at": _now(),
                                "started_at": None, "ended_at": None, "progress": None, "host": socket.gethostname(),
                                "pid": os.getpid(), "pid_started": process_start(os.getpid())})
    threading.Thread(target=_run_thread_job, args=(settings, job_id, func, args), daemon=True, name=job_id).start()
    logger.info("Started job %s in this process: %s", job_id, description)
    return job_id


def report_progress(update: dict) -> None:
    """Merge `update` into the progress of the job this code runs in (nothing outside a job)."""
    current = _thread_job.get()
    if current is not None:
        _update_thread_job(*current, lambda record: record.update(progress={**(record.get("progress") or {}), **update}))
        return
    from rq import get_current_job

    job = get_current_job()
    if job is not None:
        job.meta["progress"] = {**(job.meta.get("progress") or {}), **update}
        job.save_meta()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _run_thread_job(settings: Settings, job_id: str, func: Callable, args: tuple) -> None:
    _thread_job.set((settings, job_id))
    _update_thread_job(settings, job_id, lambda record: record.update(status="started", started_at=_now()))
    try:
        result = func(*args)
    except Exception as exc:
        logger.error("Job %s failed: %s: %s", job_id, type(exc).__name__, exc, exc_info=exc)
        outcome = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    else:
        outcome = {"status": "finished", "result": json.loads(json.dumps(result, default=str))}
    _update_thread_job(settings, job_id, lambda record: record.update(outcome, ended_at=_now()))


_thread_jobs_lock = threading.Lock()


def _update_thread_job(settings: Settings, job_id: str, change: Callable[[dict], None]) -> None:
    with _thread_jobs_lock:  # only this process writes the records of its own threads
        record = _thread_job_record(settings, job_id)
        change(record)
        _save_thread_job(settings, record)


def _save_thread_job(settings: Settings, record: dict) -> None:
    open_store(settings).set(THREAD_JOBS_PROJECT, f"job:{record['id']}", json.dumps(record))


def _thread_job_record(settings: Settings, job_id: str) -> Optional[dict]:
    """The record of an in-process job; one whose process is gone while it ran reads as failed."""
    text = open_store(settings).get(THREAD_JOBS_PROJECT, f"job:{job_id}")
    if not text:
        return None
    record = json.loads(text)
    if record["status"] in _ACTIVE_STATES and record.get("host") == socket.gethostname() \
            and not _process_alive(record.get("pid"), record.get("pid_started")):
        record.update(status="failed", error="the backend process running this job ended before it finished")
    return record


def process_start(pid: int) -> Optional[str]:
    """When process `pid` started (field 22 of `/proc/<pid>/stat`, clock ticks since boot), or
    None where that cannot be read (not Linux, no such process). With the pid it names one
    process: a pid alone is reused, e.g. by the server of a restarted container."""
    try:
        with open(f"/proc/{int(pid)}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[19]  # fields from 3 on follow the "(name)"
    except (OSError, ValueError, TypeError, IndexError):
        return None


def _process_alive(pid: Optional[int], started: Optional[str]) -> bool:
    """Whether the process that recorded (`pid`, `started`) still runs; with no start time
    recorded (no /proc), a live process of that pid is taken for it."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (TypeError, ValueError):
        return True  # no pid to check: assume it runs
    except PermissionError:
        pass  # someone else's process runs with that pid: maybe not the one that recorded it
    return started is None or process_start(pid) == started


def queue_figures(settings: Settings) -> dict:
    queue = get_queue(settings)
    return {
        "jobs_queued": queue.count,
        "jobs_started": queue.started_job_registry.count,
        "jobs_failed": queue.failed_job_registry.count,
        "jobs_finished": queue.finished_job_registry.count,
    }


# ----- run on an RQ worker --------------------------------------------------------------------------

def _new_model(model_ref: str, project_id: str, label_config: Optional[str]):
    """A new instance of the model class for the project, with the class's `default_settings()`
    (the worker's environment)."""
    return load_model_class(model_ref)(project_id=project_id, label_config=label_config)


def run_prediction_job(model_ref: str, project_id: str, label_config: Optional[str], tasks: List[dict],
                       params: dict) -> dict:
    """Predict `tasks` and upload each prediction to Label Studio. Upload failures raise (RQ retries)."""
    from .label_studio_api import label_studio_client
    from .response import normalize_predictions

    model = _new_model(model_ref, project_id, label_config)
    version = str(model.model_version)
    predictions = normalize_predictions(model.predict(tasks, context=None, **params), version)
    client = label_studio_client(model.settings)
    if client is None:
        raise RuntimeError("LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY must be set on the worker to upload predictions")
    uploaded, errors = 0, {}
    for task, prediction in zip(tasks, predictions):
        if prediction.get("error"):
            errors[str(task.get("id"))] = prediction["error"]
            logger.warning("Task %s: %s", task.get("id"), prediction["error"])
            continue
        client.predictions.create(task=task["id"], result=prediction["result"], score=prediction["score"],
                                  model_version=prediction["model_version"])
        uploaded += 1
    logger.info("Uploaded %d predictions for project %s (%d errors)", uploaded, project_id, len(errors))
    return {"uploaded": uploaded, "errors": errors, "model_version": version}


def run_fit_job(model_ref: str, project_id: str, label_config: Optional[str], event: str, data: dict) -> Any:
    return _new_model(model_ref, project_id, label_config).fit(event, data)


def _call_on_new_instance(model_class: type, project_id: str, label_config: Optional[str], method: str, args: tuple,
                          /, **construction) -> Any:
    return getattr(model_class(project_id=project_id, label_config=label_config, **construction), method)(*args)


def run_model_method(model_ref: str, project_id: str, label_config: Optional[str], method: str, *args) -> Any:
    """`<method>(*args)` of a new instance of the model class for the project (see `submit_model_method`)."""
    return _call_on_new_instance(load_model_class(model_ref), project_id, label_config, method, args)


def submit_model_method(model, method: str, *args, **options) -> str:
    """`submit` (with `model.settings`) a call of `model.<method>(*args)`, made on a new instance for
    the model's project and labeling config (on a worker, or a thread: never the request's
    instance). On a thread of this process the new instance is built as the request's was (its
    settings and the server's `model_kwargs`); an RQ worker builds it with the class's defaults.
    `options` as for `submit`."""
    if model.settings.background_jobs:
        return submit(model.settings, run_model_method, model_reference(type(model)), model.project_id,
                      model.label_config, method, *args, **options)
    call = functools.partial(_call_on_new_instance, type(model), model.project_id, model.label_config, method, args,
                             settings=model.settings, **model.kwargs)
    return submit(model.settings, call, **options)

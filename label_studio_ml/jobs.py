"""Background jobs on RQ for work longer than Label Studio waits (100 s for `/predict`).

Enabled with `BACKGROUND_JOBS=true` and a Redis at `REDIS_URL`; `rq worker --with-scheduler
label-studio-ml` processes, started in the backend's directory, run the jobs:
- a task the model marks as long (`LabelStudioMLBase.runs_in_background`) is answered at once
  with an empty result and a `job_id`; the worker predicts it and uploads the prediction to Label
  Studio through the SDK (`predictions.create`, with `model_version`);
- `START_TRAINING` enqueues `fit` and answers the job id at once.
Failed jobs are retried (`JOB_RETRIES`, with backoff); a job whose worker died is found by the
next worker's registry maintenance and retried; nothing is lost. `/jobs/<id>` shows a job.
Without `BACKGROUND_JOBS`, everything stays synchronous.
"""

import hashlib
import importlib
import logging
import os
import threading
from typing import Any, Dict, List, Optional

from .utils import env_bool, env_int

logger = logging.getLogger(__name__)

QUEUE_NAME = os.getenv("JOBS_QUEUE", "label-studio-ml")
_ACTIVE_STATES = ("queued", "started", "deferred", "scheduled")
_queues: Dict[str, Any] = {}
_queues_lock = threading.Lock()


def enabled() -> bool:
    return env_bool("BACKGROUND_JOBS", False)


def redis_url() -> str:
    return os.getenv("REDIS_URL", "redis://localhost:6379/0")


def get_queue():
    """The RQ queue on `REDIS_URL` (one per URL and process)."""
    from redis import Redis
    from rq import Queue

    url = redis_url()
    with _queues_lock:
        if url not in _queues:
            _queues[url] = Queue(QUEUE_NAME, connection=Redis.from_url(url, socket_timeout=10))
        return _queues[url]


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


def enqueue(func, *args, job_id: Optional[str] = None, description: str = "") -> str:
    """Enqueue `func(*args)` unless a job with `job_id` is already waiting, running or done."""
    from rq import Retry
    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    queue = get_queue()
    if job_id:
        try:
            existing = Job.fetch(job_id, connection=queue.connection)
            if existing.get_status() in _ACTIVE_STATES + ("finished",):
                return job_id
        except NoSuchJobError:
            pass
    retries = env_int("JOB_RETRIES", 2)
    job = queue.enqueue(
        func, *args, job_id=job_id, description=description,
        retry=Retry(max=retries, interval=[10, 60, 300][:max(retries, 1)]) if retries > 0 else None,
        job_timeout=env_int("JOB_TIMEOUT", 3600), result_ttl=env_int("JOB_RESULT_TTL", 7 * 24 * 3600),
        failure_ttl=env_int("JOB_RESULT_TTL", 7 * 24 * 3600),
    )
    logger.info("Enqueued job %s: %s", job.id, description)
    return job.id


def job_status(job_id: str) -> Optional[dict]:
    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    try:
        job = Job.fetch(job_id, connection=get_queue().connection)
    except NoSuchJobError:
        return None
    status = job.get_status()
    info = {
        "id": job.id, "status": str(status.value if hasattr(status, "value") else status),
        "description": job.description, "retries_left": job.retries_left,
        "enqueued_at": job.enqueued_at.isoformat() if job.enqueued_at else None,
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "ended_at": job.ended_at.isoformat() if job.ended_at else None,
    }
    if info["status"] == "finished":
        info["result"] = job.return_value()
    if info["status"] == "failed" and job.exc_info:
        info["error"] = job.exc_info.strip().splitlines()[-1]
    return info


def queue_figures() -> dict:
    queue = get_queue()
    return {
        "jobs_queued": queue.count,
        "jobs_started": queue.started_job_registry.count,
        "jobs_failed": queue.failed_job_registry.count,
        "jobs_finished": queue.finished_job_registry.count,
    }


# ----- run on the worker -----------------------------------------------------------------------

def _label_studio_client():
    from .label_studio_api import label_studio_client

    client = label_studio_client()
    if client is None:
        raise RuntimeError("LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY must be set on the worker to upload predictions")
    return client


def run_prediction_job(model_ref: str, project_id: str, label_config: Optional[str], tasks: List[dict],
                       params: dict) -> dict:
    """Predict `tasks` and upload each prediction to Label Studio. Upload failures raise (RQ retries)."""
    from .response import normalize_predictions

    model = load_model_class(model_ref)(project_id=project_id, label_config=label_config)
    version = str(model.model_version)
    predictions = normalize_predictions(model.predict(tasks, context=None, **params), version)
    client = _label_studio_client()
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
    model = load_model_class(model_ref)(project_id=project_id, label_config=label_config)
    return model.fit(event, data)

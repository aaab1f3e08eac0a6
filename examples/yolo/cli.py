"""Predict Label Studio tasks with the YOLO backend in this process and store the predictions
through the Label Studio API: no `/predict` round trip, so no 100 s limit on long videos or big
batches.

    python cli.py --ls-url http://localhost:8080 --ls-api-key KEY --project 1 --tasks tasks.json
    python cli.py --ls-url http://localhost:8080 --ls-api-key KEY --project 1 --tasks 1,2,3

`--tasks` is a JSON file holding a list of task ids or of tasks (`{"id": .., "data": {..}}`, as
Label Studio exports them), or comma-separated task ids, fetched from Label Studio. A task that
already holds a prediction of the model's version is skipped (so an interrupted run can simply be
started again) unless `--force`, which predicts it again and replaces its predictions of that
version (deleted once the new one is stored). Log lines are written above the progress bar.
Exit status: 0 when every task got its prediction, 1 when some tasks failed (listed at the end),
2 when nothing could be done (bad arguments, Label Studio unreachable, token refused, unknown
project or task, unusable labeling config).

Environment: `LABEL_STUDIO_URL` (or `LABEL_STUDIO_HOST`) and `LABEL_STUDIO_API_KEY` are the
defaults of `--ls-url` / `--ls-api-key`, which are also the credentials used to download task media
(the backend gets them as its settings); `LOG_LEVEL`; and the backend's own variables
(`MODEL_ROOT`, `MODEL_DIR`, `MODEL_VERSION`, ...).
"""

import argparse
import json
import logging
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterable, List, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

logger = logging.getLogger("yolo.cli")

DEFAULT_LS_URL = "http://localhost:8080"


class CliError(Exception):
    """A problem the user can fix, reported as one line without a traceback (exit status 2)."""


@dataclass
class Report:
    """What a run did, task by task."""

    created: List[int] = field(default_factory=list)
    skipped: List[int] = field(default_factory=list)
    failed: List[tuple] = field(default_factory=list)  # (task id, reason)
    replaced: List[int] = field(default_factory=list)  # ids of the predictions deleted by --force

    def summary(self) -> str:
        lines = [f"{len(self.created)} predictions created, {len(self.skipped)} tasks skipped "
                 f"(already predicted with this model version), {len(self.failed)} tasks failed"]
        if self.replaced:
            lines.append(f"{len(self.replaced)} older predictions of the same model version replaced (--force)")
        lines += [f"  task {task_id}: {reason}" for task_id, reason in self.failed]
        return "\n".join(lines)


# ----- arguments ---------------------------------------------------------------------------------

def build_parser(settings) -> argparse.ArgumentParser:
    """The command line; `settings` (the backend's, from the environment) give the Label Studio defaults."""
    parser = argparse.ArgumentParser(
        prog="cli.py", description="Predict Label Studio tasks with the YOLO backend and store the predictions in "
                                   "Label Studio.")
    parser.add_argument("--ls-url", default=settings.label_studio_url or DEFAULT_LS_URL,
                        help=f"Label Studio URL (default: LABEL_STUDIO_URL or {DEFAULT_LS_URL})")
    parser.add_argument("--ls-api-key", default=settings.label_studio_api_key or None,
                        help="Label Studio legacy token or personal access token (default: LABEL_STUDIO_API_KEY)")
    parser.add_argument("--project", type=int, required=True, help="Label Studio project id")
    parser.add_argument("--tasks", required=True,
                        help="JSON file with a list of task ids or tasks ({'id': .., 'data': {..}}), "
                             "or comma-separated task ids, e.g. 1,2,3")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="tasks predicted per model call (default 8)")
    parser.add_argument("--force", action="store_true",
                        help="predict tasks that already hold a prediction of this model version too, and replace "
                             "those predictions (deleted once the new one is stored; other versions are kept)")
    return parser


def parse_args(argv: Optional[Sequence[str]] = None, settings=None) -> argparse.Namespace:
    """The command line, with defaults from `settings` (default: the backend's, read from the environment)."""
    from utils.settings import backend_settings

    parser = build_parser(settings or backend_settings())
    args = parser.parse_args(argv)
    if not args.ls_api_key:
        parser.error("no Label Studio API key: pass --ls-api-key or set LABEL_STUDIO_API_KEY")
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if not args.ls_url.startswith(("http://", "https://")):
        parser.error(f"--ls-url must start with http:// or https://, got {args.ls_url!r}")
    args.ls_url = args.ls_url.rstrip("/")
    return args


def _task_id(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise CliError(f"{where}: task id must be an integer, got {value!r}")
    try:
        task_id = int(value)
    except ValueError:
        raise CliError(f"{where}: task id must be an integer, got {value!r}") from None
    if task_id < 1:
        raise CliError(f"{where}: task id must be positive, got {task_id}")
    return task_id


def parse_tasks_arg(value: str) -> list:
    """The `--tasks` argument as a list of task ids (ints) or of task dicts with `id` and `data`.

    A path to an existing file is read as JSON; anything else must be comma-separated ids.
    """
    if os.path.isfile(value):
        try:
            with open(value, encoding="utf-8") as f:
                items = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CliError(f"cannot read tasks from {value}: {exc}") from None
        return _validate_task_list(items, value)
    if value.lower().endswith(".json") or os.sep in value:
        raise CliError(f"tasks file not found: {value}")
    parts = [p.strip() for p in value.split(",")]
    if not any(parts):
        raise CliError("--tasks is empty: give a JSON file or comma-separated task ids")
    return [_task_id(p, "--tasks") for p in parts if p]


def _validate_task_list(items, source: str) -> list:
    if isinstance(items, dict) and isinstance(items.get("tasks"), list):
        items = items["tasks"]
    if not isinstance(items, list) or not items:
        raise CliError(f"{source}: expected a non-empty JSON list of task ids or tasks")
    if all(isinstance(i, dict) for i in items):
        for n, task in enumerate(items):
            where = f"{source}, task #{n + 1}"
            if "id" not in task or not isinstance(task.get("data"), dict):
                raise CliError(f"{where}: each task needs an 'id' and a 'data' object")
            task["id"] = _task_id(task["id"], where)
        return items
    if any(isinstance(i, dict) for i in items):
        raise CliError(f"{source}: mix of task ids and tasks; use one or the other")
    return [_task_id(i, source) for i in items]


def chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


# ----- Label Studio ------------------------------------------------------------------------------

def _api_call(what: str, call: Callable, not_found: Optional[str] = None):
    """Run an SDK call, turning its errors into one-line `CliError`s."""
    import httpx
    from label_studio_sdk.core.api_error import ApiError

    try:
        return call()
    except ApiError as exc:
        if exc.status_code in (401, 403):
            raise CliError(f"{what}: Label Studio refused the API key (HTTP {exc.status_code}); check --ls-api-key "
                           "(a legacy token or a personal access token, from Account & Settings)") from None
        if exc.status_code == 404 and not_found:
            raise CliError(not_found) from None
        raise CliError(f"{what}: Label Studio answered HTTP {exc.status_code}: {_short(exc.body)}") from None
    except httpx.HTTPError as exc:
        raise CliError(f"{what}: {type(exc).__name__}: {exc}") from None


def _short(body, limit: int = 300) -> str:
    text = body if isinstance(body, str) else json.dumps(body, default=str)
    return text if len(text) <= limit else text[:limit] + "..."


def connect(url: str, api_key: str):
    """A Label Studio SDK client, after checking that `url` is Label Studio and accepts `api_key`."""
    import httpx
    from label_studio_sdk import LabelStudio
    from label_studio_sdk.core.api_error import ApiError

    client = LabelStudio(base_url=url, api_key=api_key)
    try:
        client.users.whoami(request_options={"max_retries": 0})  # a wrong URL fails at once
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach Label Studio at {url} ({type(exc).__name__}: {exc}); check --ls-url") from None
    except ApiError as exc:
        if exc.status_code in (401, 403):
            raise CliError(f"Label Studio at {url} refused the API key (HTTP {exc.status_code}); check --ls-api-key "
                           "(a legacy token or a personal access token, from Account & Settings)") from None
        raise CliError(f"{url} does not answer like Label Studio (HTTP {exc.status_code} on /api/current-user/whoami); "
                       "check --ls-url") from None
    except ValueError as exc:  # an HTML page where JSON was expected, or a malformed personal access token
        raise CliError(f"{url} does not answer like Label Studio ({exc}); check --ls-url and --ls-api-key") from None
    return client


def fetch_tasks(client, project_id: int, task_ids: List[int]) -> List[dict]:
    """Task dicts (`id`, `data`, `predictions`) of `task_ids`, which must belong to the project."""
    from tqdm import tqdm

    tasks = []
    with logs_above_progress_bars():
        for task_id in tqdm(task_ids, desc="Fetch tasks", unit="task"):
            tasks.append(fetch_task(client, project_id, task_id))
    return tasks


def fetch_task(client, project_id: int, task_id: int) -> dict:
    task = _api_call(f"task {task_id}", lambda: client.tasks.get(task_id),
                     not_found=f"task {task_id} not found in Label Studio")
    if task.project is not None and task.project != project_id:
        raise CliError(f"task {task_id} belongs to project {task.project}, not to project {project_id}")
    predictions = [p if isinstance(p, dict) else p.model_dump() for p in task.predictions or []]
    return {"id": task.id, "data": task.data, "predictions": predictions}


def already_predicted(task: dict, model_version: str) -> bool:
    return any(isinstance(p, dict) and str(p.get("model_version")) == model_version
               for p in task.get("predictions") or [])


# ----- run ---------------------------------------------------------------------------------------

def run(args: argparse.Namespace, settings) -> Report:
    """Predict the tasks and store the predictions with the backend's `settings`, whose Label
    Studio URL and API key become the command line's; raises `CliError` when nothing can be done."""
    from tqdm import tqdm

    tasks = parse_tasks_arg(args.tasks)
    client = connect(args.ls_url, args.ls_api_key)
    project = _api_call(f"project {args.project}", lambda: client.projects.get(id=args.project),
                        not_found=f"project {args.project} not found in Label Studio (or not visible with this key)")
    if not project.label_config:
        raise CliError(f"project {args.project} has no labeling config")
    if isinstance(tasks[0], dict):
        elsewhere = [t["id"] for t in tasks if t.get("project") not in (None, args.project)]
        if elsewhere:
            raise CliError(f"{args.tasks}: tasks {', '.join(map(str, elsewhere[:10]))} belong to another project "
                           f"than {args.project}")
    else:
        tasks = fetch_tasks(client, args.project, tasks)

    # The backend fetches /data/upload/... media with these credentials, like the served backend
    # does with LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY.
    settings = settings.replace(label_studio_url=args.ls_url, label_studio_api_key=args.ls_api_key)
    from label_studio_ml.exceptions import MLBackendError
    from model import YOLO

    try:
        model = YOLO(project_id=str(args.project), label_config=project.label_config, settings=settings)
    except MLBackendError as exc:
        raise CliError(f"project {args.project}: {exc.detail}") from None
    version = str(model.model_version)
    report = Report()
    todo = []
    for task in tasks:
        if not args.force and already_predicted(task, version):
            report.skipped.append(task["id"])
        else:
            todo.append(task)
    logger.info("Project %s: %d tasks to predict with model version %s, %d already predicted",
                args.project, len(todo), version, len(report.skipped))

    with logs_above_progress_bars(ultralytics_logger()), \
            tqdm(total=len(todo), desc="Predict tasks", unit="task") as bar:
        for batch in chunks(todo, args.batch_size):
            try:
                predictions = model.predict([{"id": t["id"], "data": t["data"]} for t in batch])
            except MLBackendError as exc:
                # Media problems come back per task; an exception is about the config or the weights.
                raise CliError(f"project {args.project}: {exc.detail} ({len(report.created)} predictions were "
                               "stored before this)") from None
            for task, prediction in zip(batch, predictions):
                _store(client, task, prediction, version, report, replace=args.force)
                bar.update(1)
    return report


def _store(client, task: dict, prediction: dict, version: str, report: Report, replace: bool = False) -> None:
    """Create the task's prediction in Label Studio; with `replace`, then delete the task's older
    predictions of the same model version (after, so that a failed upload loses nothing)."""
    if prediction.get("error"):
        report.failed.append((task["id"], prediction["error"]))
        return
    model_version = str(prediction.get("model_version") or version)
    try:
        created = _api_call(f"task {task['id']}", lambda: client.predictions.create(
            task=task["id"], result=prediction["result"], score=float(prediction.get("score") or 0),
            model_version=model_version))
    except CliError as exc:
        report.failed.append((task["id"], f"prediction not stored: {exc}"))
        return
    report.created.append(task["id"])
    if replace:
        try:
            report.replaced += delete_older_predictions(client, task["id"], model_version, keep=created.id)
        except CliError as exc:
            report.failed.append((task["id"], f"new prediction stored, older ones of version {model_version} "
                                              f"not deleted: {exc}"))


def delete_older_predictions(client, task_id: int, model_version: str, keep: int) -> List[int]:
    """Delete the task's predictions of `model_version` except `keep`; their ids."""
    stored = _api_call(f"task {task_id}", lambda: client.predictions.list(task=task_id))
    older = [p.id for p in stored if p.id != keep and str(p.model_version) == model_version]
    for prediction_id in older:
        _api_call(f"task {task_id}", lambda: client.predictions.delete(id=prediction_id))
    return older


@contextmanager
def logs_above_progress_bars(*loggers: logging.Logger):
    """While a progress bar runs, write the records of the root logger and of `loggers` above it
    instead of through its line."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm(loggers=[logging.root, *loggers]):
        yield


def ultralytics_logger() -> logging.Logger:
    """Ultralytics' logger: it writes to stdout with its own handler, added when Ultralytics is
    imported (the backend imports it at the first model load), so import it first."""
    import ultralytics  # noqa: F401

    return logging.getLogger("ultralytics")


def main(argv: Optional[Sequence[str]] = None) -> int:
    from label_studio_ml.wsgi import configure_logging
    from utils.settings import backend_settings, default_yolo_settings

    try:  # both read now, so that a bad variable is reported before anything is done
        settings = backend_settings()
        default_yolo_settings()
    except ValueError as exc:  # an environment variable that does not parse, named
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args = parse_args(argv, settings)
    configure_logging(settings.log_level)
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per API call otherwise
    try:
        report = run(args, settings)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command again to predict the remaining tasks", file=sys.stderr)
        return 130
    print(report.summary(), file=sys.stderr if report.failed else sys.stdout)
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())

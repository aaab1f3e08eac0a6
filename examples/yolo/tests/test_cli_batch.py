"""`examples/yolo/cli.py` without Label Studio: arguments, the --tasks forms, what is skipped.
Against a real Label Studio: tests/e2e/test_cli_e2e.py."""

import json
import os
import re
import subprocess
import sys

import pytest

import cli
import synthetic
from fake_label_studio import LEGACY_TOKEN, make_fake_label_studio
from helpers import REPO_ROOT, serve_in_thread
from cli import CliError, already_predicted, parse_args, parse_tasks_arg
from yolo_helpers import save_image


@pytest.fixture(autouse=True)
def no_credentials_in_env(monkeypatch):
    for key in ("LABEL_STUDIO_URL", "LABEL_STUDIO_HOST", "LABEL_STUDIO_API_KEY"):
        monkeypatch.delenv(key, raising=False)


def test_arguments_and_their_env_defaults(monkeypatch):
    args = parse_args(["--ls-api-key", "k", "--project", "3", "--tasks", "1,2"])
    assert (args.ls_url, args.ls_api_key, args.project, args.tasks, args.batch_size, args.force) == (
        "http://localhost:8080", "k", 3, "1,2", 8, False)
    monkeypatch.setenv("LABEL_STUDIO_HOST", "http://host:1/")
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "from-env")
    args = parse_args(["--project", "3", "--tasks", "1"])
    assert (args.ls_url, args.ls_api_key) == ("http://host:1", "from-env")
    monkeypatch.setenv("LABEL_STUDIO_URL", "https://ls.example.com")
    args = parse_args(["--project", "3", "--tasks", "1", "--ls-url", "http://given:8080", "--force", "--batch-size", "2"])
    assert (args.ls_url, args.force, args.batch_size) == ("http://given:8080", True, 2)


@pytest.mark.parametrize("argv,needle", [
    (["--project", "1", "--tasks", "1"], "no Label Studio API key"),
    (["--ls-api-key", "k", "--tasks", "1"], "--project"),
    (["--ls-api-key", "k", "--project", "one", "--tasks", "1"], "invalid int value"),
    (["--ls-api-key", "k", "--project", "1"], "--tasks"),
    (["--ls-api-key", "k", "--project", "1", "--tasks", "1", "--ls-url", "localhost:8080"], "must start with http"),
    (["--ls-api-key", "k", "--project", "1", "--tasks", "1", "--batch-size", "0"], "at least 1"),
])
def test_bad_arguments_exit_2_with_usage(argv, needle, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    assert needle in capsys.readouterr().err


def test_comma_separated_ids():
    assert parse_tasks_arg("1,2, 3") == [1, 2, 3]
    assert parse_tasks_arg("7") == [7]
    assert parse_tasks_arg("4,5,") == [4, 5]


@pytest.mark.parametrize("value,needle", [
    ("1,two", "must be an integer, got 'two'"),
    ("0", "must be positive"),
    (",", "--tasks is empty"),
    ("missing.json", "tasks file not found: missing.json"),
    ("some/dir/tasks", "tasks file not found"),
])
def test_bad_ids(value, needle):
    with pytest.raises(CliError, match=needle):
        parse_tasks_arg(value)


def test_json_file_of_ids_or_tasks(tmp_path):
    ids = tmp_path / "ids.json"
    ids.write_text("[1, 2, \"3\"]")
    assert parse_tasks_arg(str(ids)) == [1, 2, 3]
    tasks = [{"id": 1, "data": {"image": "/data/upload/1/a.png"}, "predictions": []},
             {"id": "2", "data": {"image": "s3://bucket/b.png"}}]
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(tasks))
    loaded = parse_tasks_arg(str(path))
    assert [t["id"] for t in loaded] == [1, 2] and loaded[1]["data"] == {"image": "s3://bucket/b.png"}
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"tasks": tasks}))
    assert [t["id"] for t in parse_tasks_arg(str(wrapped))] == [1, 2]


@pytest.mark.parametrize("content,needle", [
    ("not json", "cannot read tasks from"),
    ("[]", "non-empty JSON list"),
    ('{"a": 1}', "non-empty JSON list"),
    ('[{"id": 1}]', "task #1: each task needs an 'id' and a 'data' object"),
    ('[{"id": 1, "data": {}}, {"data": {}}]', "task #2"),
    ('[{"id": 1, "data": {}}, 2]', "mix of task ids and tasks"),
    ('[1, true]', "must be an integer"),
    ('[1.5]', "must be an integer"),
])
def test_bad_json_files(tmp_path, content, needle):
    path = tmp_path / "tasks.json"
    path.write_text(content)
    with pytest.raises(CliError, match=needle):
        parse_tasks_arg(str(path))


def test_already_predicted_compares_the_model_version():
    task = {"id": 1, "data": {}, "predictions": [{"model_version": "yolo"}, {"model_version": None}]}
    assert already_predicted(task, "yolo")
    assert not already_predicted(task, "yolo-v2")
    assert not already_predicted({"id": 1, "data": {}}, "yolo")


def test_chunks():
    assert list(cli.chunks([1, 2, 3, 4, 5], 2)) == [[1, 2], [3, 4], [5]]


def test_summary_lists_the_failed_tasks():
    report = cli.Report(created=[1, 2], skipped=[3], failed=[(4, "File not found: /x.png")])
    assert report.summary().splitlines() == [
        "2 predictions created, 1 tasks skipped (already predicted with this model version), 1 tasks failed",
        "  task 4: File not found: /x.png"]


def test_unreachable_label_studio_is_one_clear_line():
    """Nothing listens on port 9 of the loopback: exit status 2, no traceback."""
    done = subprocess.run([sys.executable, cli.__file__, "--ls-url", "http://127.0.0.1:9", "--ls-api-key", "k",
                           "--project", "1", "--tasks", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": REPO_ROOT})
    assert done.returncode == 2
    assert done.stderr.startswith("error: cannot reach Label Studio at http://127.0.0.1:9") and "Traceback" not in done.stderr


def test_a_backend_variable_that_does_not_parse_is_one_clear_line_before_anything_is_done():
    """The YOLO backend's own variables are read up front too (they were read only once the tasks
    were fetched, and a bad one ended in a traceback)."""
    done = subprocess.run([sys.executable, cli.__file__, "--ls-url", "http://127.0.0.1:9", "--ls-api-key", "k",
                           "--project", "1", "--tasks", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": REPO_ROOT, "YOLO_BATCH_SIZE": "many"})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: ") and "YOLO_BATCH_SIZE" in done.stderr, done.stderr


DETECTION_CONFIG = ('<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image" '
                    'model_path="shapes-det.pt"><Label value="circle"/><Label value="square"/>'
                    '<Label value="triangle"/></RectangleLabels></View>')


@pytest.fixture
def fake_project(tmp_path):
    """A fake Label Studio holding project 1 with two tasks on local synthetic images; yields (url, state)."""
    app = make_fake_label_studio()
    state = app.config["state"]
    state["projects"][1] = {"id": 1, "title": "shapes", "label_config": DETECTION_CONFIG}
    for task_id in (1, 2):
        image = synthetic.detection_scene(synthetic.HELDOUT_SEED_START + task_id)[0]
        path = save_image(image, str(tmp_path / f"scene-{task_id}.png"))
        state["tasks"][task_id] = {"id": task_id, "project": 1, "data": {"image": path}}
    with serve_in_thread(app) as url:
        yield url, state


@pytest.fixture
def run_cli(fake_project, model_root, tmp_path):
    """cli.py in a child process, unbuffered, stdout and stderr in one stream of bytes (what a
    terminal shows, `\r` included); returns (exit status, output)."""
    url, _ = fake_project
    env = {**os.environ, "PYTHONPATH": REPO_ROOT, "PYTHONUNBUFFERED": "1", "MODEL_ROOT": model_root,
           "MODEL_DIR": str(tmp_path / "model_dir"), "LOG_LEVEL": "INFO", "YOLO_RUNTIME": "onnx"}

    def run(*args):
        done = subprocess.run([sys.executable, cli.__file__, "--ls-url", url, "--ls-api-key", LEGACY_TOKEN,
                               "--project", "1", "--tasks", "1,2", *args], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=300)
        return done.returncode, done.stdout.decode()
    return run


def test_force_replaces_the_predictions_of_the_same_model_version(fake_project, run_cli):
    _, state = fake_project
    status, output = run_cli()
    assert status == 0, output
    assert "2 predictions created, 0 tasks skipped" in output
    first = {p["task"]: p for p in state["predictions"]}
    assert sorted(first) == [1, 2] and all(p["result"] for p in first.values())
    state["predictions"].append({"id": 100, "task": 1, "model_version": "older-model", "result": [], "score": 0})

    status, output = run_cli()
    assert status == 0 and "0 predictions created, 2 tasks skipped" in output, output

    status, output = run_cli("--force")
    assert status == 0, output
    assert "2 predictions created, 0 tasks skipped" in output
    assert "2 older predictions of the same model version replaced (--force)" in output
    kept = sorted((p["task"], p["model_version"]) for p in state["predictions"])
    assert kept == [(1, "older-model"), (1, first[1]["model_version"]), (2, first[2]["model_version"])]
    replaced = {p["task"]: p for p in state["predictions"] if p["model_version"] != "older-model"}
    assert all(replaced[task]["id"] != first[task]["id"] for task in (1, 2))
    assert all(replaced[task]["result"] == first[task]["result"] for task in (1, 2))


def test_force_is_explained_in_help(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    assert "replace those predictions" in " ".join(capsys.readouterr().out.split())


def test_log_lines_are_written_above_the_progress_bar(run_cli):
    """No log record is glued to the bar's line: ours (the model load) and Ultralytics' (its own
    handler, on stdout: loading the ONNX export) each start a line of their own."""
    status, output = run_cli()
    assert status == 0, output
    segments = [s for s in re.split(r"[\r\n]", output) if s.strip()]
    bars = [s for s in segments if "Predict tasks:" in s]
    assert bars and all(s.startswith("Predict tasks:") and s.endswith("]") for s in bars), bars
    assert any(s.startswith("Predict tasks: 100%") for s in bars)
    ours = [s for s in segments if "Loaded shapes-det.pt" in s]
    theirs = [s for s in segments if "for ONNX Runtime inference" in s]
    assert ours and all(s.startswith("[") for s in ours), output
    assert theirs and all(s.startswith("Loading ") for s in theirs), output


def test_runtime_state_defaults_to_a_git_ignored_folder_of_the_backend(tmp_path):
    """Without MODEL_DIR, wherever it is started from, the backend keeps cache.db, the media cache,
    ONNX exports and Ultralytics' settings in examples/yolo/data/server: the folder docker compose
    mounts at /data, and ignored by git. The default is the backend's setting, not an environment
    variable its children would inherit."""
    yolo_dir = os.path.dirname(cli.__file__)
    env = {key: value for key, value in os.environ.items() if key not in ("MODEL_DIR", "YOLO_CONFIG_DIR")}
    env["PYTHONPATH"] = os.pathsep.join([REPO_ROOT, yolo_dir])
    shown = subprocess.run([sys.executable, "-c", "import os, model; backend = model.YOLO(); "
                            "print(backend.settings.model_dir); print(os.environ['YOLO_CONFIG_DIR']); "
                            "print(os.environ.get('MODEL_DIR', 'unset'))"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120, check=True).stdout.split()
    model_dir = os.path.join(yolo_dir, "data", "server")
    assert shown == [model_dir, os.path.join(model_dir, "ultralytics"), "unset"]
    state = [os.path.join(model_dir, name) for name in ("cache.db", "media-cache/a.png", "exports/m.onnx",
                                                        "ultralytics/settings.json")]
    ignored = subprocess.run(["git", "check-ignore", *state], cwd=REPO_ROOT, capture_output=True, text=True)
    assert ignored.stdout.split() == state
    with open(os.path.join(yolo_dir, "docker-compose.yml"), encoding="utf-8") as f:
        assert '"./data/server:/data"' in f.read()

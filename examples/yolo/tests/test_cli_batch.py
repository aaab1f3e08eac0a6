"""`examples/yolo/cli.py` without Label Studio: arguments, the --tasks forms, what is skipped.
Against a real Label Studio: tests/e2e/test_cli_e2e.py."""

import json
import os
import subprocess
import sys

import pytest

import cli
from helpers import REPO_ROOT
from cli import CliError, already_predicted, parse_args, parse_tasks_arg


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

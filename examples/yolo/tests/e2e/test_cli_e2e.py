"""`examples/yolo/cli.py` against a real Label Studio: predictions created through the SDK, one per
task, re-runs that skip what is done, and one-line errors for what a user gets wrong."""

import json
import os
import subprocess
import sys

import pytest

import synthetic
from ls_api import create_project, import_tasks, only_prediction, tasks_of, upload_files
from checks import DETECTION_CONFIG, SEEDS, VERSION, assert_objects_found, write_scenes
from yolo_helpers import box_iou, region_box_px

pytestmark = pytest.mark.e2e

YOLO_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def run_cli(label_studio, e2e_model_root, tmp_path):
    """Run cli.py in a child process (from examples/yolo, as the README does); returns it completed."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("LABEL_STUDIO_URL", "LABEL_STUDIO_HOST", "LABEL_STUDIO_API_KEY", "MODEL_VERSION")}
    env.update(MODEL_ROOT=e2e_model_root, MODEL_DIR=str(tmp_path / "cli_model_dir"), LOG_LEVEL="INFO",
               XDG_DATA_HOME=str(tmp_path / "xdg-data"), XDG_CACHE_HOME=str(tmp_path / "xdg-cache"),
               LABEL_STUDIO_URL=label_studio.url)  # the default of --ls-url

    def run(*args, api_key=label_studio.token):
        key = ["--ls-api-key", api_key] if api_key else []
        return subprocess.run([sys.executable, "cli.py", *key, *map(str, args)], cwd=YOLO_DIR, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    return run


@pytest.fixture
def detection_project(label_studio, tmp_path):
    scenes = write_scenes(tmp_path, synthetic.detection_scene, "cli", seeds=SEEDS[:3])
    project_id = create_project(label_studio, "cli", DETECTION_CONFIG)
    uploaded = upload_files(label_studio, project_id, [path for path, _, _ in scenes.values()])
    return project_id, scenes, uploaded


def assert_one_correct_prediction_each(label_studio, project_id, scenes, uploaded):
    stored = {task["id"]: task for task in tasks_of(label_studio, project_id)}
    for name, (_, image, objects) in scenes.items():
        prediction = only_prediction(stored[uploaded[name]["id"]])
        height, width = image.shape[:2]
        assert prediction["model_version"] == VERSION
        assert_objects_found(prediction["result"], objects,
                             lambda r, o: box_iou(region_box_px(r["value"], width, height), o["xyxy"]))


def test_task_ids_get_one_prediction_each_and_a_rerun_skips_them(label_studio, detection_project, run_cli):
    project_id, scenes, uploaded = detection_project
    ids = ",".join(str(task["id"]) for task in uploaded.values())
    done = run_cli("--project", project_id, "--tasks", ids)
    assert done.returncode == 0, done.stderr
    assert "3 predictions created, 0 tasks skipped" in done.stdout
    assert "Predict tasks: 100%" in done.stderr  # the progress bar
    assert_one_correct_prediction_each(label_studio, project_id, scenes, uploaded)

    again = run_cli("--project", project_id, "--tasks", ids)
    assert again.returncode == 0, again.stderr
    assert "0 predictions created, 3 tasks skipped" in again.stdout
    assert_one_correct_prediction_each(label_studio, project_id, scenes, uploaded)


def test_tasks_file_with_a_broken_task(label_studio, detection_project, run_cli, tmp_path):
    """Tasks from a JSON file (as Label Studio exports them); a task whose image is gone is reported
    and gets no prediction, the others get theirs."""
    project_id, scenes, uploaded = detection_project
    import_tasks(label_studio, project_id, [{"image": f"/data/upload/{project_id}/missing.png"}])
    tasks = [{"id": task["id"], "data": task["data"]} for task in tasks_of(label_studio, project_id)]
    tasks_file = tmp_path / "tasks.json"
    tasks_file.write_text(json.dumps(tasks))
    done = run_cli("--project", project_id, "--tasks", tasks_file, "--batch-size", 2)
    assert done.returncode == 1
    (broken,) = [task["id"] for task in tasks if task["data"]["image"].endswith("/missing.png")]
    assert "3 predictions created, 0 tasks skipped" in done.stderr
    assert f"task {broken}: " in done.stderr and "missing.png" in done.stderr
    assert_one_correct_prediction_each(label_studio, project_id, scenes, uploaded)
    assert [t["predictions"] for t in tasks_of(label_studio, project_id) if t["id"] == broken] == [[]]


@pytest.mark.parametrize("case", ["wrong url", "wrong token", "unknown project", "unknown task", "task elsewhere",
                                  "file of tasks elsewhere"])
def test_user_errors_are_one_line_without_traceback(label_studio, detection_project, run_cli, case, tmp_path):
    project_id, _, uploaded = detection_project
    task_id = next(iter(uploaded.values()))["id"]
    other_project = create_project(label_studio, "other", DETECTION_CONFIG)
    exported = tmp_path / "exported.json"
    exported.write_text(json.dumps(tasks_of(label_studio, project_id)))
    args, api_key, needle = {
        "wrong url": (["--ls-url", "http://127.0.0.1:9", "--project", project_id, "--tasks", task_id], None,
                      "cannot reach Label Studio at http://127.0.0.1:9"),
        "wrong token": (["--project", project_id, "--tasks", task_id], "0" * 40,
                        f"Label Studio at {label_studio.url} refused the API key (HTTP 401)"),
        "unknown project": (["--project", 999999, "--tasks", task_id], None, "project 999999 not found"),
        "unknown task": (["--project", project_id, "--tasks", f"{task_id},999999"], None, "task 999999 not found"),
        "task elsewhere": (["--project", other_project, "--tasks", task_id], None,
                           f"task {task_id} belongs to project {project_id}, not to project {other_project}"),
        "file of tasks elsewhere": (["--project", other_project, "--tasks", exported], None,
                                    f"belong to another project than {other_project}"),
    }[case]
    done = run_cli(*args, api_key=api_key or label_studio.token)
    assert done.returncode == 2
    last_line = done.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: ") and needle in last_line
    assert "Traceback" not in done.stderr
    assert tasks_of(label_studio, project_id)[0]["predictions"] == []

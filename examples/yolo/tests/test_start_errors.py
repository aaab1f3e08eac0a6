"""Starting the YOLO backend with a variable set to a value it cannot use: the user sees the
message naming the variable and the server stops, without a traceback. With start.sh the SDK's
variables are checked by gunicorn's config before any worker starts and the backend's own when its
app is built, in the worker; `python _wsgi.py` reads the SDK's before it starts gunicorn."""

import os
import subprocess
import sys

import pytest

from helpers import REPO_ROOT, free_port

YOLO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MESSAGE = "YOLO_BATCH_SIZE='many' is not a valid int"


def run_with_bad_variable(args, tmp_path, bad=("YOLO_BATCH_SIZE", "many")):
    env = {**os.environ, "PYTHONPATH": REPO_ROOT, bad[0]: bad[1], "PORT": str(free_port()),
           "MODEL_DIR": str(tmp_path / "model_dir"), "LABEL_STUDIO_CHECK": "false"}
    return subprocess.run(args, cwd=YOLO_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=120)


@pytest.mark.parametrize("args", [["bash", "start.sh"], [sys.executable, "_wsgi.py"]], ids=["start.sh", "_wsgi.py"])
def test_gunicorn_stops_with_the_variables_message(args, tmp_path):
    done = run_with_bad_variable(args, tmp_path)
    assert done.returncode != 0, done.stdout
    assert MESSAGE in done.stdout and "App failed to load" in done.stdout, done.stdout
    assert "Traceback" not in done.stdout, done.stdout


def test_check_is_one_error_line(tmp_path):
    done = run_with_bad_variable([sys.executable, "_wsgi.py", "--check"], tmp_path)
    assert done.returncode == 1
    assert done.stdout.strip().splitlines()[-1] == f"error: {MESSAGE}", done.stdout
    assert "Traceback" not in done.stdout, done.stdout


@pytest.mark.parametrize("args", [["bash", "start.sh"], [sys.executable, "_wsgi.py"], [sys.executable, "_wsgi.py", "--check"]],
                         ids=["start.sh", "_wsgi.py", "--check"])
def test_an_sdk_variable_that_does_not_parse_is_one_error_line(args, tmp_path):
    done = run_with_bad_variable(args, tmp_path, bad=("CACHE_TYPE", "memcached"))
    assert done.returncode != 0, done.stdout
    assert "CACHE_TYPE must be 'sqlite' or 'redis', not 'memcached'" in done.stdout, done.stdout
    assert "Traceback" not in done.stdout, done.stdout

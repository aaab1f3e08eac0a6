"""The README's first command, as a new user runs it: a fresh copy of the repository, no active
virtualenv, `bash scripts/install.sh && bash examples/yolo/start.sh`.

It must make its own `.venv` (system Pythons refuse `pip install` under PEP 668), install into it,
and serve: `/health` answers UP and a `/predict` whose weights are not there (offline, nothing in
MODEL_ROOT) answers a 4xx/424 JSON message, not a 500 or a hang. A few minutes (a full install,
from pip's cache), so it runs once per suite.
"""

import os
import shutil
import subprocess

import numpy as np
import pytest
import requests
from PIL import Image

from helpers import REPO_ROOT, free_port, read_log, start_logged, stop, wait_until_up

CONFIG = '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">' \
         '<Label value="Person" background="red"/></RectangleLabels></View>'


def repository_files():
    """What a clone of this work tree holds: tracked files and new ones git does not ignore."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO_ROOT,
                            capture_output=True, check=True).stdout.decode()
    return [path for path in listed.split("\0") if path and os.path.isfile(os.path.join(REPO_ROOT, path))]


def fresh_clone(target: str) -> str:
    for path in repository_files():
        os.makedirs(os.path.join(target, os.path.dirname(path)), exist_ok=True)
        shutil.copy2(os.path.join(REPO_ROOT, path), os.path.join(target, path))
    return target


def environment_without_virtualenv(home: str) -> dict:
    """The test runner's environment as a shell with no virtualenv activated would have it."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONPATH", "LS_ML_VENV", "LABEL_STUDIO_URL",
                        "LABEL_STUDIO_API_KEY", "MODEL_DIR", "MODEL_ROOT", "BASIC_AUTH_USER", "BASIC_AUTH_PASS")}
    active = os.environ.get("VIRTUAL_ENV")
    if active:
        env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep)
                                      if os.path.abspath(p) != os.path.join(os.path.abspath(active), "bin"))
    env["YOLO_CONFIG_DIR"] = os.path.join(home, "ultralytics")
    env["YOLO_OFFLINE"] = "true"  # the missing weights stay missing on a machine that is online
    return env


@pytest.mark.slow
def test_first_readme_command_installs_into_its_own_venv_and_serves(tmp_path):
    clone = fresh_clone(str(tmp_path / "clone"))
    env = environment_without_virtualenv(str(tmp_path))
    install = subprocess.run(["bash", "scripts/install.sh"], cwd=clone, env=env, capture_output=True, text=True,
                             timeout=1500)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    assert "creating " + os.path.join(clone, ".venv") in install.stderr  # it says what it does
    assert os.access(os.path.join(clone, ".venv", "bin", "gunicorn"), os.X_OK)

    port = free_port()
    log_path = str(tmp_path / "server.log")
    server = start_logged(["bash", "examples/yolo/start.sh"],
                          dict(env, PORT=str(port), MODEL_ROOT=str(tmp_path / "no-weights")), log_path, cwd=clone)
    base = f"http://127.0.0.1:{port}"
    image = str(tmp_path / "street.jpg")
    Image.fromarray(np.full((96, 128, 3), 127, np.uint8)).save(image)
    try:
        wait_until_up(base + "/health", server, log_path, timeout=120)
        assert requests.get(base + "/health", timeout=10).json()["status"] == "UP"
        answer = requests.post(base + "/predict", timeout=120, json={
            "tasks": [{"id": 1, "data": {"image": image}}], "label_config": CONFIG, "project": "1"})
        # the default weights are not in MODEL_ROOT and cannot be downloaded offline: a clear JSON
        # message naming the weights, never a 500
        assert 400 <= answer.status_code < 500, answer.text
        assert "yolov8m.pt" in answer.json()["detail"]
        assert requests.get(base + "/health", timeout=10).status_code == 200
    finally:
        stop(server)
        log = read_log(log_path, tail=0)
    assert "Traceback" not in log, log[-4000:]
    assert server.returncode is not None

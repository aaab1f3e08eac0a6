"""A real Label Studio server and the YOLO backend started like the README says, for the e2e suite.

Label Studio lives in its own cached virtualenv (`scripts/label_studio_venv.sh`): it pins its own
Django, SDK and friends. Each session starts it with a throwaway data directory, user and legacy
token, on a loopback port, with the settings the README tells users to set for a local backend.
"""

import os
import secrets
import shutil
import subprocess
import sys

import pytest
import requests

from helpers import REPO_ROOT, free_port, start_logged, stop
from servers import LabelStudioServer, yolo_backend_process

LS_VENV_SCRIPT = os.path.join(REPO_ROOT, "scripts", "label_studio_venv.sh")
# First start of a fresh data directory runs all Django migrations: about a minute on 2 cores.
LS_START_TIMEOUT = float(os.getenv("LS_E2E_START_TIMEOUT", 420))
LS_INSTALL_TIMEOUT = 1800


@pytest.fixture(scope="session")
def label_studio_venv() -> str:
    try:
        done = subprocess.run(["bash", LS_VENV_SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              timeout=LS_INSTALL_TIMEOUT, env={**os.environ, "PYTHON": sys.executable})
    except subprocess.TimeoutExpired:
        pytest.fail(f"{LS_VENV_SCRIPT} did not finish within {LS_INSTALL_TIMEOUT} s")
    if done.returncode != 0:
        pytest.fail(f"{LS_VENV_SCRIPT} failed (PyPI unreachable? run it by hand):\n{done.stderr[-4000:]}")
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def label_studio(label_studio_venv, tmp_path_factory):
    """Label Studio on a loopback port with a fresh database, user and legacy token."""
    root = tmp_path_factory.mktemp("label_studio")
    port = free_port()
    token = secrets.token_hex(20)  # legacy tokens are 40 characters
    env = {
        "PATH": os.path.join(label_studio_venv, "bin") + os.pathsep + os.environ.get("PATH", ""),
        "HOME": str(root),
        "LANG": "C.UTF-8",
        "LABEL_STUDIO_BASE_DATA_DIR": str(root / "data"),
        "DJANGO_DB": "sqlite",
        # What the README tells users who run the backend on the same machine or network.
        "ML_BLOCK_LOCAL_IP": "false",
        "SSRF_PROTECTION_ENABLED": "false",
        # Offline: no PyPI version check on start-up (it blocks without network).
        "LATEST_VERSION_CHECK": "false",
        "COLLECT_ANALYTICS": "false",
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
    }
    args = [os.path.join(label_studio_venv, "bin", "label-studio"), "start", "--no-browser",
            "--internal-host", "127.0.0.1", "--port", str(port),
            "--username", "e2e@example.com", "--password", secrets.token_urlsafe(16),
            "--user-token", token, "--enable-legacy-api-token"]
    process = start_logged(args, env, str(root / "label-studio.log"))
    server = LabelStudioServer(url=f"http://127.0.0.1:{port}", process=process, log_path=str(root / "label-studio.log"),
                               token=token)
    try:
        took = server.wait_until_up(LS_START_TIMEOUT)
        print(f"\nLabel Studio started in {took:.0f} s at {server.url}", file=sys.stderr)
        response = requests.get(server.url + "/api/current-user/whoami", headers=server.headers, timeout=10)
        assert response.status_code == 200, f"the legacy token is refused: {response.text}"
        yield server
    finally:
        stop(process)


@pytest.fixture(scope="session")
def e2e_model_root(model_root, tmp_path_factory):
    """A private MODEL_ROOT: the backend writes trained classifiers there. Copies, not links,
    because MODEL_ROOT refuses links to files outside it."""
    root = tmp_path_factory.mktemp("e2e_models")
    for name in os.listdir(model_root):
        shutil.copy(os.path.join(model_root, name), root / name)
    return str(root)


@pytest.fixture(scope="session")
def yolo_backend(label_studio, e2e_model_root, tmp_path_factory):
    """The YOLO backend as the README starts it, pointed at the session's Label Studio."""
    with yolo_backend_process(label_studio, e2e_model_root, tmp_path_factory.mktemp("e2e_model_dir")) as (server, _):
        yield server

"""The Docker files: one Dockerfile (in two places), compose files wired to it, and its steps run on
this machine by scripts/docker_steps_on_host.py (no Docker engine here) up to a served /health."""

import os
import subprocess
import sys

import pytest
import yaml

from helpers import REPO_ROOT

sys.path.insert(0, os.path.join(REPO_ROOT, "scripts"))
import docker_steps_on_host as steps  # noqa: E402

DOCKERFILE = os.path.join(REPO_ROOT, "Dockerfile")
YOLO_DIR = os.path.join(REPO_ROOT, "examples", "yolo")
COMPOSE_FILES = [os.path.join(REPO_ROOT, "docker-compose.yml"), os.path.join(YOLO_DIR, "docker-compose.yml")]
# SPEC section 8: the YOLO example's environment variables.
SPEC_ENV = ["LABEL_STUDIO_API_KEY", "MODEL_DIR", "MODEL_ROOT", "ALLOW_CUSTOM_MODEL_PATH", "MODEL_SCORE_THRESHOLD",
            "LOG_LEVEL", "DEBUG_PLOT", "BASIC_AUTH_USER", "BASIC_AUTH_PASS", "WORKERS", "THREADS", "PORT"]


def test_the_example_dockerfile_is_the_top_level_one():
    with open(DOCKERFILE, "rb") as top, open(os.path.join(YOLO_DIR, "Dockerfile"), "rb") as example:
        assert top.read() == example.read()


def image_env() -> dict:
    env = {}
    for instruction in steps.parse_dockerfile(DOCKERFILE):
        if instruction.keyword == "ENV":
            env.update(steps.parse_env(instruction.args))
    return env


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: os.path.relpath(p, REPO_ROOT))
def test_compose_file_builds_the_image_and_mounts_the_models(path):
    with open(path) as f:
        service = yaml.safe_load(f)["services"]["yolo"]
    here = os.path.dirname(path)
    context = os.path.normpath(os.path.join(here, service["build"]["context"]))
    assert context == REPO_ROOT
    assert os.path.isfile(os.path.join(context, service["build"]["dockerfile"]))

    env = {name: str(value) for name, value in service["environment"].items()}
    missing = [name for name in SPEC_ENV if name not in env]
    assert not missing, f"{path} does not mention {missing}"
    assert "LABEL_STUDIO_URL" in env or "LABEL_STUDIO_HOST" in env
    image = image_env()
    assert env["MODEL_ROOT"] == image["MODEL_ROOT"] == "/app/models"
    assert env["MODEL_DIR"] == image["MODEL_DIR"]

    volumes = dict(reversed(v.split(":")[:2]) for v in service["volumes"])
    assert os.path.normpath(os.path.join(here, volumes["/app/models"])) == os.path.join(YOLO_DIR, "models")
    assert env["MODEL_DIR"] in volumes  # the per-project store survives the container
    assert f"{env['PORT']}:{env['PORT']}" in [str(p) for p in service["ports"]]


def test_exposed_port_is_the_served_port():
    exposed = [i.args for i in steps.parse_dockerfile(DOCKERFILE) if i.keyword == "EXPOSE"]
    assert exposed == [image_env()["PORT"]]


# ----- the emulation itself ---------------------------------------------------------------------

def write(tmp_path, text: str) -> str:
    path = tmp_path / "Dockerfile"
    path.write_text(text)
    return str(path)


def test_parser_joins_continuations_and_drops_comments(tmp_path):
    path = write(tmp_path, "# c\nFROM python:3.11-slim\nENV A=1 \\\n    B=\"two words\"\n\nRUN echo a \\\n  && echo b\n"
                           "ENV LEGACY some value\nCMD [\"/app/start.sh\"]\n")
    parsed = [(i.line, i.keyword, i.args) for i in steps.parse_dockerfile(path)]
    assert parsed == [(2, "FROM", "python:3.11-slim"), (3, "ENV", 'A=1      B="two words"'),
                      (6, "RUN", "echo a    && echo b"), (8, "ENV", "LEGACY some value"),
                      (9, "CMD", '["/app/start.sh"]')]
    assert steps.parse_env(parsed[1][2]) == {"A": "1", "B": "two words"}
    assert steps.parse_env(parsed[3][2]) == {"LEGACY": "some value"}


def test_container_paths_map_under_the_image_root():
    image = steps.Image(root="/r", venv="/r/venv", tops=["data", "app", "tmp"])
    assert image.rewrite('mkdir -p /data /app/models && cp /tmp/x "/app/y" /application /usr/bin') == (
        'mkdir -p /r/data /r/app/models && cp /r/tmp/x "/r/app/y" /application /usr/bin')
    assert image.rewrite("http://host/app/x ./app/x") == "http://host/app/x ./app/x"


@pytest.mark.parametrize("dockerfile,needle", [
    ("FROM python:3.11-slim\nUSER nobody\nCMD [\"x\"]\n", "instructions not emulated: USER"),
    ("FROM python:3.11-slim\nWORKDIR /app\nRUN touch /etc/owned\nCMD [\"x\"]\n", "RUN uses /etc"),
    ("FROM python:3.11-slim\nWORKDIR /app\nCOPY --from=build /x /app\nCMD [\"x\"]\n", "COPY --from=build"),
    ("FROM python:3.11-slim\nWORKDIR /app\n", "no CMD"),
])
def test_what_is_not_emulated_is_refused(tmp_path, dockerfile, needle, monkeypatch):
    monkeypatch.setattr(steps, "make_venv", lambda venv: os.makedirs(venv))
    with pytest.raises(steps.DockerfileError, match=needle):
        steps.build(write(tmp_path, dockerfile), str(tmp_path / "root"))
    assert not os.path.exists("/etc/owned")


@pytest.mark.slow
def test_dockerfile_steps_run_on_this_machine_and_serve_health():
    """The RUN/COPY/WORKDIR/ENV steps of the real Dockerfile, then its CMD (start.sh: gunicorn)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MODEL_ROOT", "MODEL_DIR", "PORT")}
    done = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "scripts", "docker_steps_on_host.py")],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO_ROOT,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-6000:]
    last = done.stdout.strip().splitlines()[-1]
    assert "OK: label_studio_ml from sdk/label_studio_ml/__init__.py" in last
    assert '"model_class": "YOLO"' in last and '"status": "UP"' in last and '/app/models"' in last

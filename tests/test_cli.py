"""The `label-studio-ml` command line: create, start (real servers) and deploy gcp."""

import ast
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pytest
import requests
import yaml

from fake_label_studio import LEGACY_TOKEN, make_fake_label_studio
from helpers import REPO_ROOT, read_log, serve_in_process, serve_in_thread
from label_studio_ml import media, server
from label_studio_ml.server import (
    find_model_classes, gcp_deploy_command, main, masked, service_name, split_script_spec,
)
from label_studio_ml.settings import Settings

CLI = [sys.executable, "-m", "label_studio_ml.server"]
GENERATED = {
    ".dockerignore", ".gitignore", "Dockerfile", "README.md", "_wsgi.py", "docker-compose.yml", "model.py",
    "requirements-base.txt", "requirements-test.txt", "requirements.txt", "test_api.py",
}
MODEL_HEADER = "from label_studio_ml.model import LabelStudioMLBase\n\n"
TEXT_CONFIG = ('<View><Text name="text" value="$text"/><Choices name="sentiment" toName="text">'
               '<Choice value="Positive"/><Choice value="Negative"/></Choices></View>')


def child_env(**extra) -> dict:
    """Environment of a CLI child: this SDK importable, no credentials inherited from the caller, and
    a MODEL_DIR of its own (its store and media cache apart from any other test's)."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("BASIC_AUTH_USER", "BASIC_AUTH_PASS", "ML_SERVER_BASIC_AUTH_USER", "ML_SERVER_BASIC_AUTH_PASS")}
    env["MODEL_DIR"] = tempfile.mkdtemp(prefix="label-studio-ml-cli-test-")
    env["PYTHONPATH"] = os.pathsep.join(p for p in [REPO_ROOT, env.get("PYTHONPATH", "")] if p)
    env.update(LABEL_STUDIO_CHECK="false", **extra)
    return env


def write_script(path, body: str):
    path.write_text(MODEL_HEADER + textwrap.dedent(body))
    return path


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    """One default backend for the tests that only run it."""
    root = tmp_path_factory.mktemp("backends")
    assert main(["create", "demo", "--root-dir", str(root)]) == 0
    return root / "demo"


# ----- create ------------------------------------------------------------------------------------
def test_create_default_template(tmp_path, capsys):
    assert main(["create", "my_backend", "--root-dir", str(tmp_path)]) == 0
    target = tmp_path / "my_backend"
    assert {p.name for p in target.iterdir()} == GENERATED
    assert 'MODEL = "model:NewModel"' in (target / "_wsgi.py").read_text()
    assert "class NewModel(LabelStudioMLBase)" in (target / "model.py").read_text()
    assert "  my-backend:" in (target / "docker-compose.yml").read_text()
    for path in target.iterdir():
        assert "{{" not in path.read_text(), f"placeholder left in {path.name}"
    assert "Created ML backend NewModel" in capsys.readouterr().out


def test_generated_files_agree_on_the_data_folder_and_the_sdk(backend):
    compose = yaml.safe_load((backend / "docker-compose.yml").read_text())
    (service,) = compose["services"].values()
    env = dict(item.split("=", 1) for item in service["environment"])
    mounts = dict(reversed(volume.split(":")) for volume in service["volumes"])
    assert mounts[env["MODEL_DIR"]] == "./data/server"
    assert "`MODEL_DIR=/data`, which is `./data/server`" in (backend / "README.md").read_text()
    dockerfile = (backend / "Dockerfile").read_text()
    assert f"MODEL_DIR={env['MODEL_DIR']}" in dockerfile
    assert "label-studio-ml>=" in (backend / "requirements-base.txt").read_text()
    assert "from the package index" in dockerfile and "git" not in dockerfile
    readme = (backend / "README.md").read_text()
    for name in ("BASIC_AUTH_USER", "ML_SERVER_BASIC_AUTH_USER", "--basic-auth-user"):
        assert name in readme


def test_init_is_an_alias_and_an_empty_directory_is_accepted(tmp_path):
    (tmp_path / "empty").mkdir()
    assert main(["init", str(tmp_path / "empty")]) == 0
    assert (tmp_path / "empty" / "_wsgi.py").is_file()


def test_existing_directory_needs_force(tmp_path, capsys):
    target = tmp_path / "b"
    assert main(["create", str(target)]) == 0
    (target / "model.py").write_text("# my work\n")
    (target / "weights.bin").write_text("data")

    assert main(["create", str(target)]) == 1
    assert "--force" in capsys.readouterr().err
    assert (target / "model.py").read_text() == "# my work\n"

    assert main(["create", str(target), "--force"]) == 0
    assert "class NewModel" in (target / "model.py").read_text()
    assert (target / "weights.bin").read_text() == "data"  # files that create did not write are kept


def test_script_with_one_model_class(tmp_path):
    script = write_script(tmp_path / "my_model.py", """
        class Helper:
            pass

        class MyModel(LabelStudioMLBase):
            def predict(self, tasks, context=None, **kwargs):
                return [{"result": [], "score": 1.0} for _ in tasks]
    """)
    target = tmp_path / "b"
    assert main(["create", str(target), "--script", str(script)]) == 0
    assert (target / "my_model.py").read_text() == script.read_text()
    assert not (target / "model.py").exists()
    assert 'MODEL = "my_model:MyModel"' in (target / "_wsgi.py").read_text()
    assert 'find_model_class("my_model:MyModel")' in (target / "test_api.py").read_text()

    (target / "my_model.py").write_text(script.read_text() + "# edited in place\n")
    assert main(["create", str(target), "--script", str(target / "my_model.py"), "--force"]) == 0
    assert (target / "my_model.py").read_text().endswith("# edited in place\n")


def test_script_with_explicit_class(tmp_path):
    script = write_script(tmp_path / "models.py", """
        class First(LabelStudioMLBase):
            pass

        class Second(LabelStudioMLBase):
            pass
    """)
    target = tmp_path / "b"
    assert main(["create", str(target), "--script", f"{script}:Second"]) == 0
    assert 'MODEL = "models:Second"' in (target / "_wsgi.py").read_text()


@pytest.mark.parametrize("body, spec_suffix, message", [
    ("class First(LabelStudioMLBase): pass\nclass Second(LabelStudioMLBase): pass\n", "",
     "several subclasses of LabelStudioMLBase (First, Second)"),
    ("class Plain: pass\n", "", "no subclass of LabelStudioMLBase"),
    ("class First(LabelStudioMLBase): pass\n", ":Missing", "defines no class Missing"),
    ("class Broken(:\n", "", "Cannot parse"),
])
def test_script_errors(tmp_path, capsys, body, spec_suffix, message):
    script = write_script(tmp_path / "m.py", body)
    assert main(["create", str(tmp_path / "b"), "--script", f"{script}{spec_suffix}"]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("filename, message", [
    ("missing.py", "Script not found"),
    ("my-model.py", "Python module name"),
    ("_wsgi.py", "file of the generated backend"),
])
def test_script_file_errors(tmp_path, capsys, filename, message):
    if filename != "missing.py":
        write_script(tmp_path / filename, "class M(LabelStudioMLBase): pass\n")
    assert main(["create", str(tmp_path / "b"), "--script", str(tmp_path / filename)]) == 1
    assert message in capsys.readouterr().err


def test_model_classes_found_by_parsing():
    source = textwrap.dedent("""
        import label_studio_ml.model
        class A(label_studio_ml.model.LabelStudioMLBase): pass
        class B(A): pass
        class C(dict): pass
        def f():
            class Inner(LabelStudioMLBase): pass
    """)
    assert find_model_classes(ast.parse(source)) == ["A", "B"]


def test_script_spec_split():
    assert split_script_spec("dir/model.py:MyModel") == ("dir/model.py", "MyModel")
    assert split_script_spec("dir/model.py") == ("dir/model.py", None)
    assert split_script_spec("C:\\dir\\model.py") == ("C:\\dir\\model.py", None)


def test_generated_test_api_passes(backend):
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_api.py"],
                            cwd=backend, env=child_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout


# ----- start -------------------------------------------------------------------------------------
def test_start_serves_the_backend_with_gunicorn(backend, tmp_path):
    log = tmp_path / "server.log"
    with serve_in_process([*CLI, "start", str(backend), "-p", "{port}", "--host", "127.0.0.1"],
                          env=child_env(), log_path=str(log)) as (base, _):
        assert requests.get(base + "/health", timeout=5).json() == {"status": "UP", "model_class": "NewModel"}
        tasks = [{"id": 1, "data": {"text": "a"}}, {"id": 2, "data": {"text": "b"}}]
        answer = requests.post(base + "/predict", json={"tasks": tasks, "label_config": TEXT_CONFIG}, timeout=5)
        assert [r["model_version"] for r in answer.json()["results"]] == ["0.0.1", "0.0.1"]
        served = read_log(str(log), tail=0)
    assert "Booting worker" in served and "gunicorn" in served
    assert "development server" not in served


def test_start_debug_serves_with_flask(backend, tmp_path):
    log = tmp_path / "server.log"
    with serve_in_process([*CLI, "start", str(backend), "-p", "{port}", "--host", "127.0.0.1", "--debug"],
                          env=child_env(), log_path=str(log)) as (base, _):
        assert requests.get(base + "/health", timeout=5).json()["model_class"] == "NewModel"
        served = read_log(str(log), tail=0)
    assert "Debug mode: on" in served and "Booting worker" not in served


def readme_model() -> str:
    """The `model.py` of the README's "Write your own backend"."""
    with open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    after = readme.split("`my_backend/model.py`:", 1)[1]
    return after.split("```python\n", 1)[1].split("```", 1)[0]


def test_readme_model_served_by_a_generated_backend(tmp_path):
    """The README's `class MyModel` replaces the template's `NewModel`: `start` serves it and the
    generated tests pass, without editing `_wsgi.py` or `test_api.py`."""
    target = tmp_path / "my_backend"
    assert main(["create", str(target)]) == 0
    (target / "model.py").write_text(readme_model())
    with serve_in_process([*CLI, "start", str(target), "-p", "{port}", "--host", "127.0.0.1"],
                          env=child_env()) as (base, _):
        assert requests.get(base + "/health", timeout=5).json() == {"status": "UP", "model_class": "MyModel"}
        answer = requests.post(base + "/predict", json={"tasks": [{"id": 1, "data": {"text": "a"}}],
                                                        "label_config": TEXT_CONFIG}, timeout=5)
        assert answer.json()["results"] == [{"result": [], "score": 0.0, "model_version": "my-model-v1"}]
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_api.py"],
                           cwd=target, env=child_env(), capture_output=True, text=True, timeout=120)
    assert tests.returncode == 0, tests.stdout + tests.stderr


@pytest.mark.parametrize("body, served", [
    ("class Base(LabelStudioMLBase): pass\nclass NewModel(Base): pass\n", "NewModel"),  # the named class wins
    ("from shared import Other\nclass Mine(Other): pass\n", "Mine"),  # classes imported from elsewhere do not count
])
def test_start_finds_the_model_class(tmp_path, body, served):
    target = tmp_path / "b"
    assert main(["create", str(target)]) == 0
    write_script(target / "shared.py", "class Other(LabelStudioMLBase): pass\n")
    write_script(target / "model.py", body)
    result = subprocess.run([*CLI, "start", str(target), "--check"], env=child_env(), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"{served} instance created" in result.stderr


@pytest.mark.parametrize("body, message", [
    ("class A(LabelStudioMLBase): pass\nclass B(LabelStudioMLBase): pass\n",
     'model.py defines several subclasses of LabelStudioMLBase (A, B): keep one, or name the one to serve in '
     '_wsgi.py (MODEL = "model:ClassName")'),
    ("class Plain: pass\n",
     "model.py defines no subclass of LabelStudioMLBase: write one, e.g. class MyModel(LabelStudioMLBase)"),
])
def test_start_names_the_model_classes_when_it_cannot_choose(tmp_path, body, message):
    target = tmp_path / "b"
    assert main(["create", str(target)]) == 0
    write_script(target / "model.py", body)
    for command in (["start", str(target)], ["start", str(target), "--check"]):
        result = subprocess.run([*CLI, *command, "-p", "1"], env=child_env(), capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 1
        assert result.stderr.strip().splitlines()[-1] == f"error: {message}"
        assert "Traceback" not in result.stderr


def test_start_with_basic_auth(backend):
    with serve_in_process([*CLI, "start", str(backend), "-p", "{port}", "--host", "127.0.0.1",
                           "--basic-auth-user", "u", "--basic-auth-pass", "p"], env=child_env(), auth=("u", "p")) as (base, _):
        assert requests.get(base + "/health", timeout=5).status_code == 401
        assert requests.get(base + "/health", auth=("u", "wrong"), timeout=5).status_code == 401
        assert requests.get(base + "/health", auth=("u", "p"), timeout=5).status_code == 200


@pytest.mark.parametrize("prefix", ["ML_SERVER_", ""])
def test_start_takes_basic_auth_from_the_environment(backend, prefix):
    """Both names documented in `start --help` and the READMEs work."""
    env = child_env(**{f"{prefix}BASIC_AUTH_USER": "u", f"{prefix}BASIC_AUTH_PASS": "p"})
    with serve_in_process([*CLI, "start", str(backend), "-p", "{port}", "--host", "127.0.0.1"], env=env,
                          auth=("u", "p")) as (base, _):
        assert requests.get(base + "/health", timeout=5).status_code == 401
        assert requests.get(base + "/health", auth=("u", "p"), timeout=5).status_code == 200


def test_start_help_names_both_basic_auth_variables(capsys):
    with pytest.raises(SystemExit):
        main(["start", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    for name in ("ML_SERVER_BASIC_AUTH_USER", "BASIC_AUTH_USER", "ML_SERVER_BASIC_AUTH_PASS", "BASIC_AUTH_PASS",
                 "gunicorn", "foreground"):
        assert name in shown


def test_startup_line_advises_on_docker_only_when_label_studio_is_not_reachable(monkeypatch):
    """`localhost` from a container-like host (one with /.dockerenv) may be right, e.g. with host
    networking: the advice comes only with a failed check."""
    real_exists = os.path.exists
    monkeypatch.setattr(media.os.path, "exists", lambda path: path == "/.dockerenv" or real_exists(path))
    with serve_in_thread(make_fake_label_studio()) as ls_url:
        settings = Settings(label_studio_url=ls_url.replace("127.0.0.1", "localhost"), label_studio_api_key=LEGACY_TOKEN)
        url = settings.label_studio_url
        assert media.check_label_studio_connection(settings) == f"Label Studio at {url} is reachable, legacy token accepted"
        refused = media.check_label_studio_connection(settings.replace(label_studio_api_key="0" * 40))
    assert refused.startswith(f"Label Studio at {url} answered HTTP 401") and "host.docker.internal" in refused
    # nothing listens there
    unreachable = media.check_label_studio_connection(settings.replace(label_studio_url="http://localhost:9"))
    assert "is not reachable" in unreachable and "host.docker.internal" in unreachable


def test_start_check(tmp_path, backend):
    assert subprocess.run([*CLI, "start", str(backend), "--check"], env=child_env(), timeout=60).returncode == 0

    script = write_script(tmp_path / "failing.py", """
        class Failing(LabelStudioMLBase):
            def setup(self):
                raise RuntimeError("weights not found")
    """)
    assert main(["create", str(tmp_path / "b"), "--script", str(script)]) == 0
    result = subprocess.run([*CLI, "start", str(tmp_path / "b"), "--check"], env=child_env(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "weights not found" in result.stderr


@pytest.mark.parametrize("make, args, message", [
    (None, [], "No ML backend directory"),
    ("dir", [], "has no _wsgi.py"),
    ("backend", ["--basic-auth-user", "u"], "go together"),
    ("backend", ["--kwargs", "novalue"], "KEY=VALUE"),
])
def test_start_errors(tmp_path, capsys, monkeypatch, make, args, message):
    monkeypatch.delenv("ML_SERVER_BASIC_AUTH_PASS", raising=False)
    target = tmp_path / "b"
    if make == "dir":
        target.mkdir()
    elif make == "backend":
        assert main(["create", str(target)]) == 0
    assert main(["start", str(target), *args]) == 1
    assert message in capsys.readouterr().err


def test_console_script_is_installed():
    if shutil.which("label-studio-ml") is None:
        pytest.skip("label-studio-ml is not installed (pip install -e .)")
    result = subprocess.run(["label-studio-ml", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "create" in result.stdout and "start" in result.stdout and "deploy" in result.stdout


# ----- deploy gcp --------------------------------------------------------------------------------
DEPLOY = ["--gcp-project-id", "proj-1", "--gcp-region", "europe-west1",
          "--label-studio-host", "https://ls.example.com", "--label-studio-api-key", "SECRET-KEY"]


def test_gcp_deploy_command():
    command = gcp_deploy_command("/src/My_Backend", "proj-1", "europe-west1", "https://ls.example.com", "KEY")
    assert command == [
        "gcloud", "run", "deploy", "my-backend", "--source", "/src/My_Backend", "--region", "europe-west1",
        "--project", "proj-1", "--platform", "managed",
        "--set-env-vars", "LABEL_STUDIO_URL=https://ls.example.com,LABEL_STUDIO_API_KEY=KEY",
        "--allow-unauthenticated", "--port", "9090",
    ]
    with_auth = gcp_deploy_command("/src/b", "p", "r", "https://ls", "KEY", basic_auth=("u", "pw"))
    assert "LABEL_STUDIO_URL=https://ls,LABEL_STUDIO_API_KEY=KEY,BASIC_AUTH_USER=u,BASIC_AUTH_PASS=pw" in with_auth


def test_service_names():
    assert service_name("./backends/My_Cool Model/") == "my-cool-model"
    assert service_name("42") == "ml-42"
    long = service_name("a" * 62 + "_b")
    assert len(long) <= 63 and not long.endswith("-")


def test_masked_hides_secrets_even_when_quoted():
    shown = masked(["gcloud", "--set-env-vars", "KEY=it's secret"], ["it's secret"])
    assert "secret" not in shown and "****" in shown


def test_deploy_dry_run_masks_the_key(tmp_path, capsys):
    script = write_script(tmp_path / "my_model.py", "class M(LabelStudioMLBase): pass\n")
    assert main(["deploy", "gcp", str(tmp_path / "svc"), "--from", str(script), *DEPLOY, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "gcloud run deploy svc --source" in out and "LABEL_STUDIO_API_KEY=****" in out
    assert "SECRET-KEY" not in out
    assert not (tmp_path / "svc").exists()


def test_deploy_without_gcloud(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    script = write_script(tmp_path / "my_model.py", "class M(LabelStudioMLBase): pass\n")
    assert main(["deploy", "gcp", str(tmp_path / "svc"), "--from", str(script), *DEPLOY]) == 1
    err = capsys.readouterr().err
    assert "gcloud is not installed" in err and server.GCLOUD_INSTALL_URL in err
    assert not (tmp_path / "svc").exists()


@pytest.mark.skipif(os.name != "posix", reason="fake gcloud is a shell script")
def test_deploy_runs_gcloud_with_the_real_key(tmp_path, capsys, monkeypatch):
    bin_dir, record = tmp_path / "bin", tmp_path / "gcloud-args"
    bin_dir.mkdir()
    fake = bin_dir / "gcloud"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{record}"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    script = write_script(tmp_path / "my_model.py", "class M(LabelStudioMLBase): pass\n")

    assert main(["deploy", "gcp", str(tmp_path / "svc"), "--from", str(script), *DEPLOY]) == 0
    assert "LABEL_STUDIO_URL=https://ls.example.com,LABEL_STUDIO_API_KEY=SECRET-KEY" in record.read_text().splitlines()
    assert (tmp_path / "svc" / "_wsgi.py").is_file()
    captured = capsys.readouterr()
    assert "SECRET-KEY" not in captured.out + captured.err


def test_deploy_existing_backend_or_refuse(tmp_path, capsys):
    target = tmp_path / "svc"
    assert main(["deploy", "gcp", str(target), *DEPLOY, "--dry-run"]) == 1
    assert "give the model script with --from" in capsys.readouterr().err

    assert main(["create", str(target)]) == 0
    capsys.readouterr()
    assert main(["deploy", "gcp", str(target), *DEPLOY, "--dry-run"]) == 0
    assert f"--source {target}" in capsys.readouterr().out

    script = write_script(tmp_path / "my_model.py", "class M(LabelStudioMLBase): pass\n")
    assert main(["deploy", "gcp", str(target), "--from", str(script), *DEPLOY, "--dry-run"]) == 1
    assert "--force" in capsys.readouterr().err

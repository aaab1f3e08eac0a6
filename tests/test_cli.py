"""The `label-studio-ml` command line: create, start (real servers) and deploy gcp."""

import ast
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import requests

from helpers import REPO_ROOT, serve_in_process
from label_studio_ml import server
from label_studio_ml.server import (
    find_model_classes, gcp_deploy_command, main, masked, service_name, split_script_spec,
)

CLI = [sys.executable, "-m", "label_studio_ml.server"]
GENERATED = {
    ".dockerignore", "Dockerfile", "README.md", "_wsgi.py", "docker-compose.yml", "model.py",
    "requirements-base.txt", "requirements-test.txt", "requirements.txt", "test_api.py",
}
MODEL_HEADER = "from label_studio_ml.model import LabelStudioMLBase\n\n"


def child_env(**extra) -> dict:
    """Environment of a CLI child: this SDK importable, no credentials inherited from the caller."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("BASIC_AUTH_USER", "BASIC_AUTH_PASS", "ML_SERVER_BASIC_AUTH_USER", "ML_SERVER_BASIC_AUTH_PASS")}
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
    assert "from model import NewModel" in (target / "_wsgi.py").read_text()
    assert "run_model_server(NewModel)" in (target / "_wsgi.py").read_text()
    assert "class NewModel(LabelStudioMLBase)" in (target / "model.py").read_text()
    assert "  my-backend:" in (target / "docker-compose.yml").read_text()
    for path in target.iterdir():
        assert "{{" not in path.read_text(), f"placeholder left in {path.name}"
    assert "Created ML backend NewModel" in capsys.readouterr().out


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
    assert "from my_model import MyModel" in (target / "_wsgi.py").read_text()
    assert "from my_model import MyModel" in (target / "test_api.py").read_text()

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
    assert "from models import Second" in (target / "_wsgi.py").read_text()


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
def test_start_serves_the_backend(backend):
    with serve_in_process([*CLI, "start", str(backend), "-p", "{port}", "--host", "127.0.0.1"],
                          env=child_env()) as (base, _):
        assert requests.get(base + "/health", timeout=5).json() == {"status": "UP", "model_class": "NewModel"}
        tasks = [{"id": 1, "data": {"text": "a"}}, {"id": 2, "data": {"text": "b"}}]
        results = requests.post(base + "/predict", json={"tasks": tasks}, timeout=5).json()["results"]
        assert [r["model_version"] for r in results] == ["0.0.1", "0.0.1"]


def test_start_with_basic_auth(backend):
    with serve_in_process([*CLI, "start", str(backend), "-p", "{port}", "--host", "127.0.0.1",
                           "--basic-auth-user", "u", "--basic-auth-pass", "p"], env=child_env(), auth=("u", "p")) as (base, _):
        assert requests.get(base + "/health", timeout=5).status_code == 401
        assert requests.get(base + "/health", auth=("u", "wrong"), timeout=5).status_code == 401
        assert requests.get(base + "/health", auth=("u", "p"), timeout=5).status_code == 200


def test_start_takes_basic_auth_from_the_environment(backend):
    env = child_env(ML_SERVER_BASIC_AUTH_USER="u", ML_SERVER_BASIC_AUTH_PASS="p")
    with serve_in_process([*CLI, "start", str(backend), "-p", "{port}", "--host", "127.0.0.1"], env=env,
                          auth=("u", "p")) as (base, _):
        assert requests.get(base + "/health", timeout=5).status_code == 401
        assert requests.get(base + "/health", auth=("u", "p"), timeout=5).status_code == 200


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

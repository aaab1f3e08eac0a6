"""The per-project store: persistence, concurrency across processes, Redis sharing, model versions."""

import os
import subprocess

import pytest
import requests

from helpers import PYTHON, REPO_ROOT, serve_in_process, serve_in_thread
from label_studio_ml.api import init_app
from label_studio_ml.settings import Settings
from label_studio_ml.store import RedisStore, SQLiteStore, open_store
from sdk_models import EchoModel

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def test_values_survive_a_server_restart(model_dir):
    command = [PYTHON, "-m", "gunicorn", "--workers", "2", "--threads", "4", "-b", "127.0.0.1:{port}", "sdk_models:app"]
    env = {"MODEL_DIR": str(model_dir), "LABEL_STUDIO_CHECK": "false"}
    with serve_in_process(command, env=env, cwd=TESTS_DIR) as (base, _):
        response = requests.post(base + "/setup", json={"project": "11.170", "schema": "<View/>", "extra_params": {"k": "v"}})
        assert response.status_code == 200
        for _ in range(3):
            requests.post(base + "/webhook", json={"action": "ANNOTATION_UPDATED", "project": {"id": 11}})
    with serve_in_process(command, env=env, cwd=TESTS_DIR) as (base, _):
        result = requests.post(base + "/predict", json={"tasks": [{"data": {"text": "x"}}], "project": "11"}).json()
        assert result["results"][0]["extra_params"] == {"k": "v"}
        response = requests.post(base + "/webhook", json={"action": "ANNOTATION_UPDATED", "project": {"id": 11}})
        assert response.json()["result"]["fit_count"] == 4


def test_four_processes_times_200_concurrent_writes_lose_nothing(model_dir):
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, MODEL_DIR=str(model_dir), CACHE_TYPE="sqlite")
    workers = [subprocess.Popen([PYTHON, os.path.join(TESTS_DIR, "store_writer.py"), f"w{i}", "200", "4"], env=env,
                                stderr=subprocess.PIPE, text=True) for i in range(4)]
    for proc in workers:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    items = SQLiteStore(os.path.join(model_dir, "cache.db")).items("p1")
    expected = {f"w{w}-{i}": f"value-w{w}-{i}" for w in range(4) for i in range(200)}
    assert {k: v for k, v in items.items() if k != "hot"} == expected
    assert items["hot"] in {"w0", "w1", "w2", "w3"}


def test_projects_are_isolated(settings):
    a, b = EchoModel(project_id="1", settings=settings), EchoModel(project_id="2", settings=settings)
    a.set("key", "A")
    assert b.get("key") is None and not b.has("key") and a.has("key")


def test_model_version_semver_and_bump(settings):
    class Plain(EchoModel):
        def setup(self):
            pass

    model = Plain(project_id="1", settings=settings)
    assert str(model.model_version) == "0.0.1"
    assert model.bump_model_version() == "0.1.0"
    assert str(Plain(project_id="1", settings=settings).model_version) == "0.1.0"
    model.set("model_version", "yolo")
    assert model.bump_model_version() == "yolo.1"
    assert model.bump_model_version() == "yolo.2"


def test_label_config_is_remembered_per_project(settings):
    EchoModel(project_id="4", label_config="<View><Text name='t' value='$t'/></View>", settings=settings)
    assert EchoModel(project_id="4", settings=settings).label_config == "<View><Text name='t' value='$t'/></View>"
    assert EchoModel(project_id="5", settings=settings).label_config is None


def test_one_store_per_location_whatever_the_settings_object(settings, tmp_path):
    model = EchoModel(project_id="1", settings=settings)
    assert model.store is open_store(settings.replace(predict_concurrency=1))
    assert open_store(settings.replace(model_dir=str(tmp_path))) is not model.store


def test_redis_backend_shares_state_between_two_app_instances(redis_url, model_dir, settings):
    settings = settings.replace(cache_type="redis", redis_url=redis_url)
    assert isinstance(open_store(settings), RedisStore)
    with serve_in_thread(init_app(EchoModel, settings=settings)) as first, \
            serve_in_thread(init_app(EchoModel, settings=settings)) as second:
        requests.post(first + "/setup", json={"project": "21.5", "schema": "<View/>", "extra_params": {"shared": True}})
        requests.post(first + "/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": 21}})
        result = requests.post(second + "/predict", json={"tasks": [{"data": {"text": "x"}}], "project": "21"}).json()
        assert result["results"][0]["extra_params"] == {"shared": True}
        response = requests.post(second + "/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": 21}})
        assert response.json()["result"]["fit_count"] == 2
    assert not os.path.exists(os.path.join(model_dir, "cache.db")), "redis mode must not write a SQLite file"


def test_redis_backend_across_processes(redis_url, model_dir):
    command = [PYTHON, "-m", "gunicorn", "--workers", "2", "-b", "127.0.0.1:{port}", "sdk_models:app"]
    env = {"CACHE_TYPE": "redis", "REDIS_URL": redis_url, "LABEL_STUDIO_CHECK": "false", "MODEL_DIR": str(model_dir)}
    with serve_in_process(command, env=env, cwd=TESTS_DIR) as (a, _), serve_in_process(command, env=env, cwd=TESTS_DIR) as (b, _):
        for _ in range(5):
            requests.post(a + "/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": 31}})
        response = requests.post(b + "/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": 31}})
        assert response.json()["result"]["fit_count"] == 6


def test_unknown_cache_type_is_a_clear_error():
    with pytest.raises(ValueError, match="CACHE_TYPE"):
        Settings.from_env({"CACHE_TYPE": "memcached"})

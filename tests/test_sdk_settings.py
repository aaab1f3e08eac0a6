"""The SDK's settings: read from the environment once, frozen, handed to what needs them."""

import dataclasses
import os

import pytest

from label_studio_ml.admission import gate_from_settings, server_threads
from label_studio_ml.api import init_app
from label_studio_ml.model import LabelStudioMLBase
from label_studio_ml.settings import Settings, SettingsError
from label_studio_ml.wsgi import app_for_gunicorn


def test_variables_are_read_by_field_name_then_aliases():
    settings = Settings.from_env({"LABEL_STUDIO_HOST": "http://ls:8080/", "LABEL_STUDIO_ACCESS_TOKEN": " token ",
                                  "ML_SERVER_BASIC_AUTH_USER": "user", "BASIC_AUTH_PASS": "pass",
                                  "PREDICT_CONCURRENCY": "2", "REQUEST_BODY_TIMEOUT": "1.5", "BACKGROUND_JOBS": "yes"})
    assert (settings.label_studio_url, settings.label_studio_api_key) == ("http://ls:8080", "token")
    assert (settings.basic_auth_user, settings.basic_auth_pass) == ("user", "pass")
    assert (settings.predict_concurrency, settings.request_body_timeout, settings.background_jobs) == (2, 1.5, True)
    both = Settings.from_env({"LABEL_STUDIO_URL": "http://first", "LABEL_STUDIO_HOST": "http://alias",
                              "ML_SERVER_BASIC_AUTH_USER": "ml-server", "BASIC_AUTH_USER": "plain"})
    assert both.label_studio_url == "http://first"
    assert both.basic_auth_user == "ml-server"  # as `label-studio-ml start` reads them


def test_an_empty_boolean_variable_turns_it_off():
    assert Settings.from_env({"LABEL_STUDIO_CHECK": ""}).label_studio_check is False  # default True
    assert Settings.from_env({}).label_studio_check is True


def test_empty_variables_keep_the_defaults_and_overrides_win():
    empty = {"PREDICT_CONCURRENCY": "", "BACKGROUND_JOBS": "", "LABEL_STUDIO_URL": "", "LABEL_STUDIO_HOST": "",
             "MODEL_DIR": "", "BASIC_AUTH_USER": ""}
    assert Settings.from_env(empty) == Settings()
    assert Settings.from_env({"PORT": "1", "THREADS": "9"}, port=2).port == 2
    assert Settings.from_env({"PORT": "1", "THREADS": "9"}, port=2).threads == 9


@pytest.mark.parametrize("name, value", [("PREDICT_CONCURRENCY", "four"), ("BACKGROUND_JOBS", "maybe"),
                                         ("REQUEST_BODY_TIMEOUT", "soon"), ("CACHE_TYPE", "memcached")])
def test_a_value_that_does_not_parse_names_its_variable(name, value):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_a_settings_error_while_building_the_app_is_gunicorns_app_load_error():
    """gunicorn prints an AppImportError's message alone and stops ("App failed to load"); any other
    error of the app's code keeps its traceback."""
    from gunicorn.errors import AppImportError

    def bad_setting():
        Settings.from_env({"JOB_RETRIES": "twice"})

    with pytest.raises(AppImportError, match="^JOB_RETRIES='twice' is not a valid int$"):
        app_for_gunicorn(bad_setting)
    with pytest.raises(KeyError):
        app_for_gunicorn(lambda: {}["missing"])
    assert issubclass(SettingsError, ValueError)


def test_media_cache_path_and_paths_are_absolute(tmp_path, monkeypatch):
    assert Settings(model_dir=str(tmp_path)).media_cache_path == str(tmp_path / "media-cache")
    monkeypatch.chdir(tmp_path)
    settings = Settings(model_dir="state", media_cache_dir="media")
    assert (settings.model_dir, settings.media_cache_path) == (str(tmp_path / "state"), str(tmp_path / "media"))


def test_settings_are_frozen_and_replace_makes_a_new_one():
    settings = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.debug = True
    assert settings.replace(debug=True).debug and not settings.debug


def test_a_model_class_may_give_its_own_default_settings(tmp_path):
    class Custom(LabelStudioMLBase):
        @classmethod
        def default_settings(cls):
            return Settings(model_dir=str(tmp_path), label_studio_check=False)

    assert Custom(project_id="1").settings.model_dir == str(tmp_path)
    given = Settings(model_dir=os.path.join(str(tmp_path), "given"))
    assert Custom(project_id="1", settings=given).settings is given
    server = init_app(Custom, basic_auth_user="u", basic_auth_pass="p").extensions["ml_server"]
    assert (server.settings.model_dir, server.settings.basic_auth_user, server.settings.basic_auth_pass) == \
        (str(tmp_path), "u", "p")
    assert server.new_model("1").settings is server.settings


def test_threads_leave_reserved_threads_free():
    assert server_threads(Settings()) == 4 + 64 + 2
    assert server_threads(Settings(predict_concurrency=1, predict_queue_size=3)) == 8  # gunicorn_config's least
    assert server_threads(Settings(threads=100)) == 100
    unknown = gate_from_settings(Settings())  # Flask's development server: a thread per connection
    assert (unknown.max_running, unknown.max_waiting) == (4, 64)
    known = gate_from_settings(Settings(threads=10))  # 8 to admit: 4 running, 4 waiting
    assert (known.max_running, known.max_waiting) == (4, 4)

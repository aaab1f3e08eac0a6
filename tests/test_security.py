"""Secrets never reach the logs; the Redis store description hides passwords."""

import logging

import requests

from fake_label_studio import LEGACY_TOKEN, make_fake_label_studio, personal_access_token
from helpers import serve_in_thread
from label_studio_ml import media
from label_studio_ml.api import init_app
from label_studio_ml.store import RedisStore
from sdk_models import EchoModel


def test_no_secret_is_logged_even_at_debug(settings, caplog):
    setup_token = "setup-access-token-SECRET-1"
    password = "basic-pass-SECRET-2"
    pat = personal_access_token()
    caplog.set_level(logging.DEBUG)
    with serve_in_thread(make_fake_label_studio()) as ls_url:
        settings = settings.replace(label_studio_url=ls_url, label_studio_api_key=pat, label_studio_check=True)
        with serve_in_thread(init_app(EchoModel, basic_auth_user="user", basic_auth_pass=password, settings=settings)) as base:
            auth = ("user", password)
            requests.post(base + "/setup", auth=auth, json={"project": "1.2", "schema": "<View/>",
                                                            "hostname": ls_url, "access_token": setup_token})
            requests.post(base + "/predict", auth=("user", "wrong-" + password), json={"tasks": []})
            EchoModel(project_id="1", settings=settings).get_local_path("/data/upload/1/a.png")
            settings = settings.replace(label_studio_api_key=LEGACY_TOKEN)
            EchoModel(project_id="1", settings=settings).get_local_path("/data/upload/1/b.png")
            logging.getLogger("startup").info(media.check_label_studio_connection(settings))
    text = caplog.text
    assert "/data/upload/1/a.png" in text or "storage-data" in text, "debug logging was captured"
    for secret in (setup_token, password, pat, LEGACY_TOKEN):
        assert secret not in text


def test_redis_description_hides_the_password():
    store = RedisStore("redis://:hunter2@127.0.0.1:6399/0")
    assert "hunter2" not in store.describe() and "127.0.0.1:6399/0" in store.describe()

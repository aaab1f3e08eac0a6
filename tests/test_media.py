"""Task media: local paths, Label Studio uploads with legacy and personal tokens, errors, cache bounds."""

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from helpers import REPO_ROOT, serve_in_thread, wait_until
from fake_label_studio import LEGACY_TOKEN, PNG_BYTES, make_fake_label_studio, personal_access_token
from label_studio_ml import media
from label_studio_ml.api import init_app
from label_studio_ml.exceptions import FailedDependency, NotFound, PayloadTooLarge, TaskDataError
from sdk_models import EchoModel


@pytest.fixture
def fake_ls(settings):
    """A fake Label Studio: its URL, its state, and settings naming it (with no API key)."""
    app = make_fake_label_studio()
    with serve_in_thread(app) as base:
        yield base, app.config["state"], settings.replace(label_studio_url=base)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def test_local_paths_are_used_as_is(tmp_path, settings):
    image = tmp_path / "a.png"
    image.write_bytes(PNG_BYTES)
    assert media.get_local_path(settings, str(image)) == str(image)
    assert media.get_local_path(settings, "file://" + str(image)) == str(image)
    with pytest.raises(NotFound, match="/no/such/file.png"):
        media.get_local_path(settings, "/no/such/file.png")
    with pytest.raises(TaskDataError):  # one task's bad data, not a bad request
        media.get_local_path(settings, None)


def test_upload_with_legacy_token(fake_ls, model_dir):
    _, _, settings = fake_ls
    settings = settings.replace(label_studio_api_key=LEGACY_TOKEN)
    path = media.get_local_path(settings, "/data/upload/1/img.png")
    assert read(path) == PNG_BYTES
    assert path.startswith(media.media_cache_dir(settings)) and path.startswith(str(model_dir / "media-cache"))


@pytest.mark.parametrize("served_via", ["legacy", "proxy"])
def test_uploads_take_the_route_that_works_and_remember_it(fake_ls, monkeypatch, caplog, served_via):
    """Label Studio 1.23 serves uploads at /data/upload/: one request each, no retry logged. A Label
    Studio that serves them only through the storage proxy costs one failed request, once."""
    _, state, settings = fake_ls
    settings = settings.replace(label_studio_api_key=LEGACY_TOKEN)
    monkeypatch.setattr(media, "_upload_routes", media._UploadRoutes())
    state["uploads_via"] = served_via
    with caplog.at_level("INFO"):
        for name in ("one.png", "two.png", "three.png"):
            assert read(media.get_local_path(settings, f"/data/upload/1/{name}")) == PNG_BYTES
    retries = [r for r in caplog.records if "failed" in r.getMessage().lower()]
    if served_via == "legacy":
        assert state["upload_requests"] == ["legacy"] * 3 and retries == []
    else:
        assert state["upload_requests"] == ["legacy", "proxy", "proxy", "proxy"] and len(retries) == 1


def test_one_file_asked_for_by_two_threads_is_downloaded_once_and_whole(fake_ls):
    """The second thread waits for the first download instead of reading its half-written file."""
    _, state, settings = fake_ls
    settings = settings.replace(label_studio_api_key=LEGACY_TOKEN)
    with ThreadPoolExecutor(2) as pool:
        paths = list(pool.map(lambda _: media.get_local_path(settings, "/data/upload/1/slow.png"), range(2)))
    assert [read(p) for p in paths] == [PNG_BYTES, PNG_BYTES]
    assert state["downloads"] == 1


def test_a_slow_download_holds_up_only_the_threads_that_want_the_same_file(fake_ls):
    """Other files are looked up and downloaded meanwhile (a shared lock would make some of
    these 150 wait for the slow one, which answers only when the test lets it)."""
    base, state, settings = fake_ls
    settings = settings.replace(label_studio_api_key=LEGACY_TOKEN)
    state["slow_seconds"] = 60
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(media.get_local_path, settings, base + "/public/slow.png")
        deadline = time.monotonic() + 30
        while not state["public_requests"] and time.monotonic() < deadline:
            time.sleep(0.01)
        for number in range(150):
            assert read(media.get_local_path(settings, f"/data/upload/1/other-{number}.png")) == PNG_BYTES
        assert not slow.done(), "the slow download is still under way"
        state["release_slow"].set()
        assert read(slow.result()) == PNG_BYTES
    assert media._file_locks._locks == {}, "no lock is kept for files nobody asks for"


FETCH_IN_A_PROCESS = """
import sys
from label_studio_ml import media
from label_studio_ml.settings import Settings
settings = Settings(model_dir=sys.argv[1])
print("asking", flush=True)
path = media.get_local_path(settings, sys.argv[2])
with open(path, "rb") as f:
    print(len(f.read()))
"""


def test_one_file_asked_for_by_two_processes_is_downloaded_once_and_whole(fake_ls, model_dir):
    """gunicorn's workers and RQ workers share the media cache: a process asking for a file that
    another is downloading waits for it (it took the half-written file for a cache hit)."""
    base, state, _ = fake_ls
    url = base + "/public/trickle.png"
    args = [sys.executable, "-c", FETCH_IN_A_PROCESS, str(model_dir), url]
    env = {**os.environ, "PYTHONPATH": REPO_ROOT}
    first = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, text=True)
    second = None
    try:
        wait_until(lambda: state["public_requests"], timeout=60)
        time.sleep(0.5)  # the first half is in the cache file
        second = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, text=True)
        assert second.stdout.readline().strip() == "asking"
        with pytest.raises(subprocess.TimeoutExpired):
            second.wait(timeout=5)  # waits for the download under way
        state["release_trickle"].set()
        answers = [process.communicate(timeout=60)[0].split()[-1] for process in (first, second)]
    finally:
        state["release_trickle"].set()
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
    assert answers == [str(len(PNG_BYTES))] * 2
    assert state["public_requests"] == ["trickle.png"]
    assert os.listdir(os.path.join(model_dir, "media-cache", media.LOCKS_FOLDER)) == []


def test_a_forked_child_does_not_keep_a_download_locked(tmp_path):
    """A lock belongs to the open file a forked child shares (Ultralytics' data loaders fork during a
    training in the serving process): the child's copies are closed."""
    with media._held_across_processes(str(tmp_path), "a file"):
        held = set(media._lock_fds_held)
        assert len(held) == 1
        child = os.fork()
        if child == 0:
            still_open = [fd for fd in held if _is_open(fd)]
            os._exit(1 if still_open or media._lock_fds_held else 0)
        _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert media._lock_fds_held == set() and os.listdir(tmp_path) == []


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def test_upload_with_personal_access_token_refreshes_once_on_401(fake_ls):
    _, state, settings = fake_ls
    settings = settings.replace(label_studio_api_key=personal_access_token())
    assert read(media.get_local_path(settings, "/data/upload/1/one.png")) == PNG_BYTES
    assert state["refreshes"] == 1
    assert read(media.get_local_path(settings, "/data/upload/1/two.png")) == PNG_BYTES
    assert state["refreshes"] == 1, "a valid access token is reused"
    state["valid_access"].clear()  # Label Studio revoked the access token
    assert read(media.get_local_path(settings, "/data/upload/1/three.png")) == PNG_BYTES
    assert state["refreshes"] == 2


def test_cloud_storage_uri_goes_through_presign_with_task_id(fake_ls):
    _, _, settings = fake_ls
    settings = settings.replace(label_studio_api_key=LEGACY_TOKEN)
    assert read(media.get_local_path(settings, "s3://bucket/a.png", task_id=10)) == PNG_BYTES
    with pytest.raises(FailedDependency, match="s3://bucket/b.png"):
        media.get_local_path(settings, "s3://bucket/b.png")  # no task id: cannot presign


def test_wrong_token_missing_file_and_timeouts_name_the_url(fake_ls):
    base, _, settings = fake_ls
    with pytest.raises(FailedDependency, match=r"HTTP 401.*LABEL_STUDIO_API_KEY"):
        media.get_local_path(settings.replace(label_studio_api_key="wrong"), "/data/upload/1/img.png")
    settings = settings.replace(label_studio_api_key=LEGACY_TOKEN)
    with pytest.raises(NotFound, match="missing.png"):
        media.get_local_path(settings, "/data/upload/1/missing.png")
    settings = settings.replace(media_read_timeout=0.5)
    with pytest.raises(FailedDependency, match="slow.png"):
        media.get_local_path(settings, base + "/public/slow.png")
    with pytest.raises(FailedDependency, match="127.0.0.1:9"):
        media.get_local_path(settings, "http://127.0.0.1:9/unreachable.png")
    with pytest.raises(PayloadTooLarge, match="huge.png"):
        media.get_local_path(settings.replace(media_max_bytes=1000), base + "/public/huge.png")


def test_label_studio_urls_without_label_studio_url_are_a_clear_error(settings):
    for url in ("/data/upload/1/img.png", "s3://bucket/a.png", "/data/local-files/?d=a.png"):
        with pytest.raises(FailedDependency, match="LABEL_STUDIO_URL is not set"):
            media.get_local_path(settings, url, task_id=1)


def test_setup_credentials_are_the_fallback(fake_ls, settings):
    base, _, _ = fake_ls
    with serve_in_thread(init_app(EchoModel, settings=settings)) as server:
        requests.post(server + "/setup", json={"project": "3.1", "schema": "<View/>", "hostname": base,
                                               "access_token": LEGACY_TOKEN})
    assert read(EchoModel(project_id="3", settings=settings).get_local_path("/data/upload/3/x.png")) == PNG_BYTES
    with pytest.raises(FailedDependency):
        EchoModel(project_id="4", settings=settings).get_local_path("/data/upload/3/x.png")


def test_media_cache_stays_bounded(tmp_path):
    for i in range(10):
        path = tmp_path / f"f{i}"
        path.write_bytes(b"x" * 1000)
        os.utime(path, (i, i))
    freed = media.prune_media_cache(str(tmp_path), 4500)
    assert freed == 6000
    assert sorted(os.listdir(tmp_path)) == ["f6", "f7", "f8", "f9"]


def test_connection_check_line(fake_ls):
    base, _, settings = fake_ls
    check = media.check_label_studio_connection
    assert check(settings.replace(label_studio_api_key=LEGACY_TOKEN)).startswith(
        f"Label Studio at {base} is reachable, legacy token accepted")
    assert "personal access token accepted" in check(settings.replace(label_studio_api_key=personal_access_token()))
    assert "HTTP 401" in check(settings.replace(label_studio_api_key="nope"))
    assert "no scheme" in check(settings.replace(label_studio_url="localhost:8080", label_studio_api_key="nope"))

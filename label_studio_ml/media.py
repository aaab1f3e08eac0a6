"""Fetching task media (uploads, local storage, cloud storage, http URLs) with Label Studio credentials.

Downloads go through the SDK's `label_studio_tools` `get_local_path`; this module adds what users
of the original stumbled on: Personal Access Tokens (JWT refresh tokens exchanged for short-lived
access tokens, refreshed again once on a 401), a timeout and a size limit on every download, a
bounded cache directory, errors that name the URL, and one start-up line telling whether Label
Studio is reachable with the configured URL and token.
"""

import hashlib
import logging
import os
import re
import socket
import threading
import time
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from typing import Any, Dict, Optional, Tuple
from urllib.parse import unquote, urlparse

import jwt
import requests
from label_studio_sdk._extensions.label_studio_tools.core.utils import io as ls_io
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

try:
    import fcntl
except ImportError:  # Windows: downloads take turns within a process only
    fcntl = None

from .exceptions import FailedDependency, MLBackendError, NotFound, PayloadTooLarge, TaskDataError
from .settings import Settings
from .watchdog import WATCHDOG

logger = logging.getLogger(__name__)

_URI_PREFIXES = ("upload", "/upload", "/data/", "/storage-data/", "s3:", "gs:", "azure-blob:", "http://", "https://")


def url_problems(url: str) -> list:
    """Human advice about a Label Studio URL that will not work (empty list when it looks fine)."""
    problems = []
    if not url:
        return problems
    if not url.startswith(("http://", "https://")):
        problems.append(f"LABEL_STUDIO_URL={url!r} has no scheme: use e.g. http://{url}")
    host = urlparse(url if "://" in url else "http://" + url).hostname or ""
    if host in ("localhost", "127.0.0.1") and os.path.exists("/.dockerenv"):
        problems.append(
            f"LABEL_STUDIO_URL={url!r} points to the container itself: inside Docker use "
            "http://host.docker.internal:8080 or the host's IP address"
        )
    return problems


def is_personal_access_token(token: str) -> bool:
    """Personal Access Tokens are JWT refresh tokens; legacy tokens are plain hex keys."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return False
    return claims.get("token_type", "refresh") == "refresh"


class _TokenExchange:
    """Turns a Personal Access Token into an access token, cached until shortly before it expires."""

    def __init__(self):
        self._lock = threading.Lock()
        self._cache = {}  # (base_url, refresh token) -> (access token, expires_at)

    def access_token(self, base_url: str, refresh_token: str, timeout: Tuple[float, float], force: bool = False) -> str:
        key = (base_url, refresh_token)
        with self._lock:
            cached = self._cache.get(key)
            if cached and not force and cached[1] > time.time() + 30:
                return cached[0]
            response = requests.post(
                f"{base_url}/api/token/refresh/", json={"refresh": refresh_token}, timeout=timeout
            )
            if response.status_code != 200:
                raise FailedDependency(
                    f"Label Studio at {base_url} refused the Personal Access Token "
                    f"(HTTP {response.status_code} from /api/token/refresh/)"
                )
            access = response.json()["access"]
            try:
                expires_at = jwt.decode(access, options={"verify_signature": False}).get("exp", 0)
            except jwt.PyJWTError:
                expires_at = time.time() + 60
            self._cache[key] = (access, expires_at)
            return access


_tokens = _TokenExchange()


def _timeout(settings: Settings) -> Tuple[float, float]:
    return settings.media_connect_timeout, settings.media_read_timeout


# ----- credentials: which token may go to which host ----------------------------------------------

def _origin(url: str) -> str:
    parsed = urlparse(url)
    return f"{parsed.scheme.lower()}://{parsed.netloc.lower()}"


def valid_label_studio_url(value: Any) -> Optional[str]:
    """`value` as a Label Studio base URL (`http(s)://host[:port][/path]`, no trailing slash), else None."""
    if not isinstance(value, str):
        return None
    value = value.strip().rstrip("/")
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname or "@" in parsed.netloc:
        return None
    if parsed.query or parsed.fragment or parsed.params:
        return None
    return value


def media_credentials(settings: Settings, stored: Optional[dict] = None, hostname: Optional[str] = None,
                      access_token: Optional[str] = None) -> Tuple[str, str]:
    """`(Label Studio URL, token)` that media downloads may use.

    A token goes only to the host it came with. `LABEL_STUDIO_URL`, when set, is the Label Studio:
    `/setup`'s hostname never overrides it, and its token is `LABEL_STUDIO_API_KEY`, else the one
    `/setup` sent. Without it, the hostname and token `/setup` sent (`stored`) are used as the pair
    they came as: an unauthenticated `/setup` naming another host must not receive a token sent
    earlier, nor `LABEL_STUDIO_API_KEY`. `hostname`/`access_token` (passed by a backend's own code)
    win; a hostname passed alone gets a token only when it is the configured Label Studio.
    """
    stored = stored or {}
    configured_url, configured_key = settings.label_studio_url, settings.label_studio_api_key
    if configured_url:
        default = (configured_url, configured_key or stored.get("access_token") or "")
    else:
        default = (stored.get("hostname") or "", stored.get("access_token") or "")
    if not hostname:
        return default[0], access_token or default[1]
    hostname = hostname.rstrip("/")
    if access_token:
        return hostname, access_token
    same_host = bool(default[0]) and _origin(hostname) == _origin(default[0])
    return hostname, default[1] if same_host else ""


_TASK_MEDIA_PATH = re.compile(r"/tasks/[0-9]+/(presign|resolve)/")
_PROJECT_MEDIA_PATH = re.compile(r"/projects/[0-9]+/resolve/")


def is_media_endpoint(url: str, base_url: str) -> bool:
    """True for Label Studio's media endpoints under `base_url`: uploads, local files, presigned
    cloud files, storage proxies. The token is sent there and nowhere else on that host."""
    if not base_url or _origin(url) != _origin(base_url):
        return False
    path = unquote(urlparse(url).path)
    if "\\" in path or any(segment in (".", "..") for segment in path.split("/")):
        return False
    prefix = urlparse(base_url).path.rstrip("/")
    if not path.startswith(prefix + "/"):
        return False
    path = path[len(prefix):]
    return (path.startswith(("/data/upload/", "/data/local-files/", "/storage-data/uploaded/"))
            or bool(_TASK_MEDIA_PATH.fullmatch(path)) or bool(_PROJECT_MEDIA_PATH.fullmatch(path)))


def task_id_for_url(task_id: Any) -> int:
    """A task id as it may go into a Label Studio URL: an integer, else a `TaskDataError`."""
    if isinstance(task_id, int) and not isinstance(task_id, bool) and task_id >= 0:
        return task_id
    if isinstance(task_id, str) and re.fullmatch(r"[0-9]{1,18}", task_id):
        return int(task_id)
    raise TaskDataError(f"Task id {str(task_id)[:40]!r} is not an integer: cloud storage media cannot be resolved")


# ----- bounded downloads --------------------------------------------------------------------------

_active_deadline: ContextVar[Optional["_Deadline"]] = ContextVar("media_download_deadline", default=None)


class _Deadline:
    """A total time limit for one media download: when it passes, the sockets of the download are
    shut down, which ends a read blocked on a server that trickles bytes (the read timeout bounds
    only each wait, not the sum). The time runs from the download's first request: waiting for
    another thread's download of the same file is not part of it."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.expires_at: Optional[float] = None
        self.expired = False
        self._sockets = []
        self._lock = threading.Lock()

    def track(self, sock) -> None:
        with self._lock:
            self._sockets.append(sock)
            expired = self.expired
        if expired:
            _shutdown(sock)

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shutdown(sock)

    @contextmanager
    def enforced(self):
        """Run the block with this deadline: sockets it opens are tracked, the watchdog expires them."""
        if self.expires_at is None:
            self.expires_at = time.monotonic() + self.seconds
        scheduled = WATCHDOG.schedule(max(0.0, self.expires_at - time.monotonic()), self.expire)
        token = _active_deadline.set(self)
        try:
            yield
        finally:
            _active_deadline.reset(token)
            WATCHDOG.cancel(scheduled)


def _shutdown(sock) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


class _TracksSocket:
    """Mixin of urllib3 connections: register the socket with the download's deadline."""

    def connect(self):
        super().connect()
        deadline = _active_deadline.get()
        if deadline is not None:
            deadline.track(self.sock)


class _TrackedHTTPConnection(_TracksSocket, HTTPConnection):
    pass


class _TrackedHTTPSConnection(_TracksSocket, HTTPSConnection):
    pass


class _TrackedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _TrackedHTTPConnection


class _TrackedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _TrackedHTTPSConnection


class _DeadlineAdapter(HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _TrackedHTTPPool, "https": _TrackedHTTPSPool}


class _BoundedSession(requests.Session):
    """The session the SDK downloads media with: a read timeout on every wait, a total deadline
    (`MEDIA_TOTAL_TIMEOUT`) for the whole download, bytes counted while they stream
    (`MEDIA_MAX_BYTES`, whatever `Content-Length` says), and the token stripped from any request
    that is not to one of Label Studio's media endpoints (redirects included).

    It also remembers whether Label Studio refused the credentials: the SDK may try a second
    URL after a 401 and then re-raise the first URL's error, which would hide the 401.
    """

    def __init__(self, settings: Settings, base_url: str = "", sends_token: bool = True):
        super().__init__()
        self.settings = settings
        self.base_url = base_url
        self.sends_token = sends_token  # False: no token at all (the SDK would fall back to LABEL_STUDIO_API_KEY)
        self.deadline = _Deadline(settings.media_total_timeout)
        self.refusals = set()  # 401/403 answers seen
        self.withheld = False  # a token the SDK added was not sent
        self.downloaded = False  # a cache hit sends no request
        self.mount("http://", _DeadlineAdapter())
        self.mount("https://", _DeadlineAdapter())

    @property
    def unauthorized(self) -> bool:
        return 401 in self.refusals

    def request(self, method, url, **kwargs):
        kwargs.setdefault("timeout", _timeout(self.settings))
        with self.deadline.enforced():
            try:
                response = super().request(method, url, **kwargs)
                self._read_body(response, url)
                if self.deadline.expired:  # a body ended by closing the connection looks complete
                    raise requests.ConnectionError(f"{url}: cut off at the deadline")
            except requests.RequestException as exc:
                if self.deadline.expired:
                    raise FailedDependency(f"Cannot download {url}: not complete within "
                                           f"{self.deadline.seconds:g} s (MEDIA_TOTAL_TIMEOUT)") from exc
                raise
        self.downloaded = self.downloaded or response.ok
        if response.status_code in (401, 403):
            self.refusals.add(response.status_code)
        return response

    def send(self, request, **kwargs):
        if "Authorization" in request.headers and not (self.sends_token and is_media_endpoint(request.url, self.base_url)):
            logger.warning("Not sending the Label Studio token to %s: not a Label Studio media endpoint",
                           urlparse(request.url)._replace(query="").geturl())
            del request.headers["Authorization"]
            self.withheld = True
        return super().send(request, **kwargs)

    def _read_body(self, response, url: str) -> None:
        """Read the body now, counting bytes, so that the SDK (which keeps it in memory and writes it
        to the cache) never sees more than `MEDIA_MAX_BYTES`, chunked or not."""
        limit = self.settings.media_max_bytes
        length = response.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > limit:
            response.close()
            raise PayloadTooLarge(f"{url} is {int(length)} bytes, above MEDIA_MAX_BYTES={limit}")
        body = bytearray()
        for chunk in response.iter_content(64 * 1024):
            body += chunk
            if len(body) > limit:
                response.close()
                raise PayloadTooLarge(f"{url} sent more than MEDIA_MAX_BYTES={limit} bytes")
        # requests keeps a consumed body here; `response.content` now returns it without reading.
        response._content = bytes(body)


def media_cache_dir(settings: Settings) -> str:
    """`MEDIA_CACHE_DIR`, else `<MODEL_DIR>/media-cache`, created if need be."""
    path = settings.media_cache_path
    os.makedirs(path, exist_ok=True)
    return path


def _cache_dir_for(url: str, base_url: str, task_id: Optional[int], cache_dir: str) -> str:
    """Where `url`'s file is cached. What Label Studio serves is cached per Label Studio (a file of
    one never answers for another), and a cloud URI per task: Label Studio presigns it through the
    task's project storage, so the same URI may be another file in another project or storage."""
    if url.startswith(("http://", "https://")):
        return cache_dir
    host_dir = os.path.join(cache_dir, "ls-" + hashlib.sha256(_origin(base_url).encode()).hexdigest()[:12])
    if task_id is None:
        return host_dir
    return os.path.join(host_dir, f"task-{task_id}")


_prune_lock = threading.Lock()


def prune_media_cache(cache_dir: str, max_bytes: int) -> int:
    """Delete the least recently used files (in `cache_dir` and below) until the cache holds at most
    `max_bytes`; return bytes freed. Directories left empty are removed."""
    with _prune_lock:
        entries = []
        for folder, subfolders, names in os.walk(cache_dir):
            if LOCKS_FOLDER in subfolders:
                subfolders.remove(LOCKS_FOLDER)  # another process may hold one
            for name in names:
                path = os.path.join(folder, name)
                try:
                    stat = os.stat(path)
                except OSError:
                    continue
                entries.append((max(stat.st_atime, stat.st_mtime), stat.st_size, path))
        total = sum(size for _, size, _ in entries)
        freed = 0
        for _, size, path in sorted(entries):
            if total - freed <= max_bytes:
                break
            try:
                os.remove(path)
                freed += size
            except OSError:
                pass
            _remove_empty_parents(os.path.dirname(path), cache_dir)
        return freed


def _remove_empty_parents(folder: str, root: str) -> None:
    while os.path.abspath(folder) != os.path.abspath(root):
        try:
            os.rmdir(folder)
        except OSError:
            return  # not empty
        folder = os.path.dirname(folder)


class _UploadRoutes:
    """Which URL form serves uploaded files, remembered per Label Studio URL.

    An upload (`/data/upload/<project>/<file>`) can be fetched at that legacy path, which Label
    Studio 1.23 serves, or through the storage proxy (`/storage-data/uploaded/?filepath=...`), which
    the SDK rewrites uploads to and which only a Label Studio with cloud-backed default storage
    needs. The legacy path is tried first; the form that worked is tried first next time, so a
    Label Studio costs one failed request per process at most, and a retry is logged only when a
    request really failed."""

    LEGACY, PROXY = "legacy", "proxy"

    def __init__(self):
        self._working = {}

    def attempts(self, url: str, base_url: str) -> list:
        """`(route, URL to hand to the SDK)` pairs for `url`, in the order to try them (route None:
        not an upload, nothing to choose)."""
        if not base_url or not url.startswith(("/data/upload/", "upload/", "/upload/")):
            return [(None, url)]
        path = url.lstrip("/")
        legacy = base_url.rstrip("/") + "/" + (path if path.startswith("data/") else "data/" + path)
        # `url` itself (relative) takes the SDK's route: the storage proxy, then its own fallback
        attempts = [(self.LEGACY, legacy), (self.PROXY, url)]
        return attempts[::-1] if self._working.get(base_url) == self.PROXY else attempts

    def worked(self, base_url: str, route: Optional[str]) -> None:
        if route is not None:
            self._working[base_url] = route


_upload_routes = _UploadRoutes()

class _FileLocks:
    """The SDK writes a download straight to its cache path and takes any existing path for a cache
    hit: a second thread or process asking for the same file meanwhile would read it half written
    or download it again into the same path. So the lookups and downloads of one file take turns
    within the process and, through a lock file in `lock_dir` (`_held_across_processes`), with the
    other processes sharing the media cache, while other files go their way; a file's lock lives
    while a thread holds or waits for it."""

    def __init__(self):
        self._guard = threading.Lock()
        self._locks: Dict[tuple, list] = {}  # key -> [lock, threads holding or waiting for it]

    @contextmanager
    def held(self, key: tuple, lock_dir: str):
        with self._guard:
            entry = self._locks.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0], _held_across_processes(lock_dir, "\0".join(key)):
                yield
        finally:
            with self._guard:
                entry[1] -= 1
                if not entry[1]:
                    del self._locks[key]


_file_locks = _FileLocks()

LOCKS_FOLDER = ".locks"  # in the media cache: the lock files of downloads under way


_lock_fds_held: set = set()  # descriptors of the lock files this process holds


def _close_inherited_lock_fds() -> None:
    """In a forked child (Ultralytics' data loaders fork during a training in the serving
    process): a lock belongs to the open file that the child shares, so the child's copies are
    closed, else the parent's downloads would stay locked until the child exits."""
    for fd in _lock_fds_held:
        with suppress(OSError):
            os.close(fd)
    _lock_fds_held.clear()


if fcntl is not None:
    os.register_at_fork(after_in_child=_close_inherited_lock_fds)


def _same_file(fd: int, path: str) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _lock_file(path: str) -> int:
    """The descriptor of `path`, locked, once `path` is still that file (see `_held_across_processes`)."""
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        except FileNotFoundError:  # no lock folder yet, or the cache folder was removed meanwhile
            os.makedirs(os.path.dirname(path), exist_ok=True)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if _same_file(fd, path):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # removed or replaced by the holder we waited for: lock the file there now


@contextmanager
def _held_across_processes(lock_dir: str, key: str):
    """Hold the file lock of `key` (a cached file) against other processes sharing the media cache:
    gunicorn's workers and RQ workers (what `_FileLocks` does for the threads of one process). The
    lock file is removed by its holder when done, so lock files do not pile up; a process that
    opened it before the removal finds, once it has the lock, that the path is gone or another file,
    and locks the file there now."""
    if fcntl is None:
        yield
        return
    path = os.path.join(lock_dir, hashlib.sha256(key.encode()).hexdigest()[:32] + ".lock")
    fd = _lock_file(path)
    _lock_fds_held.add(fd)
    try:
        yield
    finally:
        if _same_file(fd, path):  # not a file another process locked after the folder was removed
            with suppress(OSError):
                os.unlink(path)
        _lock_fds_held.discard(fd)
        os.close(fd)


def _is_local_path(url: str) -> bool:
    """A file on this machine: `file://...`, or a path that exists (checked before URL prefixes, since
    `/data/...` may be a real directory inside a container)."""
    return url.startswith("file://") or os.path.isfile(url)


def get_local_path(
    settings: Settings,
    url: str,
    task_id=None,
    hostname: Optional[str] = None,
    access_token: Optional[str] = None,
    cache_dir: Optional[str] = None,
) -> str:
    """Local file path for task media `url`, downloading (and caching) it when needed.

    `hostname`/`access_token` default to `LABEL_STUDIO_URL`/`LABEL_STUDIO_API_KEY` (see
    `media_credentials` for which token may go where). Raises `NotFound` (404) when the file does
    not exist, `FailedDependency` (424) when it cannot be fetched, `TaskDataError` for a value that
    is no URL or path, or a task id that is no integer where one goes into a URL; each message
    names the URL.
    """
    if not isinstance(url, str) or not url.strip():
        raise TaskDataError(f"Task data value is not a media URL or path: {str(url)[:100]!r}")
    if _is_local_path(url):
        path = url[len("file://"):] if url.startswith("file://") else url
        if not os.path.isfile(path):
            raise NotFound(f"File not found: {url}")
        return path
    if not url.startswith(_URI_PREFIXES):
        raise NotFound(f"File not found: {url}")

    base_url, token = media_credentials(settings, hostname=hostname, access_token=access_token)
    if not base_url and not url.startswith(("http://", "https://")):
        raise FailedDependency(f"Cannot fetch {url}: it is served by Label Studio and LABEL_STUDIO_URL is not set")
    cloud = ls_io.is_cloud_storage_uri(url)
    task_id = task_id_for_url(task_id) if cloud and task_id is not None else None
    cache_dir = cache_dir or media_cache_dir(settings)
    target_dir = _cache_dir_for(url, base_url, task_id, cache_dir)
    os.makedirs(target_dir, exist_ok=True)
    pat = bool(token) and bool(base_url) and is_personal_access_token(token)

    def fetch(session, target, force_refresh=False):
        effective = _tokens.access_token(base_url, token, _timeout(settings), force=force_refresh) if pat else token
        lock_dir = os.path.join(cache_dir, LOCKS_FOLDER)
        with _file_locks.held((target_dir, target), lock_dir), ls_io.http_session(session):
            return ls_io.get_local_path(
                target, cache_dir=target_dir, hostname=base_url or None, access_token=effective or None,
                download_resources=True, task_id=task_id,
                image_dir=target_dir,  # else the SDK creates ~/.local/share/label-studio to look for uploads
            )

    session = _BoundedSession(settings, base_url, sends_token=bool(token))

    def fetch_refreshing(target):
        nonlocal session
        try:
            return fetch(session, target)
        except requests.HTTPError:
            if not (pat and session.refusals):
                raise
            session = _BoundedSession(settings, base_url, sends_token=bool(token))  # the access token may have been revoked: refresh once
            return fetch(session, target, force_refresh=True)

    try:
        attempts = _upload_routes.attempts(url, base_url)
        for number, (route, attempt) in enumerate(attempts, 1):
            try:
                path = fetch_refreshing(attempt)
            except requests.HTTPError as exc:
                if number == len(attempts):
                    raise
                status = exc.response.status_code if exc.response is not None else None
                logger.info("Download of %s failed (HTTP %s); trying the %s route", attempt, status, attempts[number][0])
                continue
            _upload_routes.worked(base_url, route)
            break
    except MLBackendError:
        raise
    except requests.HTTPError as exc:
        if session.unauthorized and session.withheld:
            raise FailedDependency(
                f"Cannot download {url}: HTTP 401, and no token was sent: a token goes only to the media "
                "endpoints of the Label Studio it belongs to (LABEL_STUDIO_URL, or the hostname /setup sent "
                "with its token)"
            ) from exc
        if session.unauthorized:
            raise FailedDependency(
                f"Cannot download {url}: Label Studio refused the credentials (HTTP 401): check LABEL_STUDIO_API_KEY"
            ) from exc
        if session.refusals:  # Label Studio answers 403 both for a missing upload and for no access
            raise FailedDependency(
                f"Cannot download {url}: HTTP 403 from Label Studio: the file does not exist or "
                "LABEL_STUDIO_API_KEY has no access to it"
            ) from exc
        status = exc.response.status_code if exc.response is not None else None
        if status == 404:
            raise NotFound(f"File not found: {url} (HTTP 404)") from exc
        raise FailedDependency(f"Cannot download {url}: HTTP {status}") from exc
    except requests.Timeout as exc:
        raise FailedDependency(f"Cannot download {url}: no answer within {settings.media_read_timeout:g} s (MEDIA_READ_TIMEOUT)") from exc
    except requests.ConnectionError as exc:
        host = urlparse(exc.request.url if exc.request is not None else url).netloc or url
        raise FailedDependency(f"Cannot download {url}: cannot connect to {host}") from exc
    except requests.RequestException as exc:
        raise FailedDependency(f"Cannot download {url}: {type(exc).__name__}: {exc}") from exc
    except FileNotFoundError as exc:
        raise NotFound(f"Cannot resolve {url}: {exc}") from exc
    except Exception as exc:  # the SDK raises ValueError or bare Exception (cloud URI without task id...)
        raise FailedDependency(f"Cannot resolve {url}: {exc}") from exc

    if session.downloaded:  # only a new file can push the cache over its bound
        max_mb = settings.media_cache_max_mb
        prune_media_cache(cache_dir, max_mb * 1024 * 1024)
        if not os.path.exists(path):  # pruned right away: the cache is smaller than this one file
            raise PayloadTooLarge(f"{url} does not fit in MEDIA_CACHE_MAX_MB={max_mb}")
    return path


def check_label_studio_connection(settings: Settings) -> str:
    """One line saying whether Label Studio is reachable with the configured URL and token.

    Called once at start-up (never on a request path); the token itself is never logged. Advice
    about the URL (e.g. `localhost` inside a container) is added only when the check did not
    succeed: a URL that works needs no advice.
    """
    base_url, token = settings.label_studio_url, settings.label_studio_api_key
    if not base_url:
        return "LABEL_STUDIO_URL is not set: media under /data/upload, local and cloud storage cannot be fetched"
    problems = url_problems(base_url)
    if not base_url.startswith(("http://", "https://")):
        return "; ".join(problems)
    reachable, message = _reachability(base_url, token, _timeout(settings))
    return message if reachable else "; ".join([message] + problems)


def _reachability(base_url: str, token: str, timeout: Tuple[float, float]) -> Tuple[bool, str]:
    """`(True, message)` when Label Studio accepted the token, else `(False, what went wrong)`."""
    if not token:
        return False, f"Label Studio at {base_url}: LABEL_STUDIO_API_KEY is not set, uploads cannot be fetched"
    kind = "personal access token" if is_personal_access_token(token) else "legacy token"
    try:
        if kind == "personal access token":
            headers = {"Authorization": "Bearer " + _tokens.access_token(base_url, token, timeout)}
        else:
            headers = {"Authorization": "Token " + token}
        response = requests.get(f"{base_url}/api/current-user/whoami", headers=headers, timeout=(2, 3))
    except Exception as exc:  # reachability is advice only
        return False, f"Label Studio at {base_url} is not reachable: {type(exc).__name__}"
    if response.status_code == 200:
        return True, f"Label Studio at {base_url} is reachable, {kind} accepted"
    return False, (f"Label Studio at {base_url} answered HTTP {response.status_code} to the {kind}: "
                   "check LABEL_STUDIO_API_KEY")

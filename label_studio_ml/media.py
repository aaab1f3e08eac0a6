"""Fetching task media (uploads, local storage, cloud storage, http URLs) with Label Studio credentials.

Downloads go through the SDK's `label_studio_tools` `get_local_path`; this module adds what users
of the original stumbled on: Personal Access Tokens (JWT refresh tokens exchanged for short-lived
access tokens, refreshed again once on a 401), a timeout and a size limit on every download, a
bounded cache directory, errors that name the URL, and one start-up line telling whether Label
Studio is reachable with the configured URL and token.
"""

import logging
import os
import threading
import time
from typing import Optional, Tuple
from urllib.parse import urlparse

import jwt
import requests
from label_studio_sdk._extensions.label_studio_tools.core.utils import io as ls_io

from .exceptions import BadRequest, FailedDependency, NotFound, PayloadTooLarge
from .utils import env_float, env_int

logger = logging.getLogger(__name__)

_URI_PREFIXES = ("upload", "/upload", "/data/", "/storage-data/", "s3:", "gs:", "azure-blob:", "http://", "https://")


def label_studio_url() -> str:
    """`LABEL_STUDIO_URL` (alias `LABEL_STUDIO_HOST`), without a trailing slash."""
    return (os.getenv("LABEL_STUDIO_URL") or os.getenv("LABEL_STUDIO_HOST") or "").strip().rstrip("/")


def label_studio_api_key() -> str:
    return (os.getenv("LABEL_STUDIO_API_KEY") or os.getenv("LABEL_STUDIO_ACCESS_TOKEN") or "").strip()


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

    def access_token(self, base_url: str, refresh_token: str, force: bool = False) -> str:
        key = (base_url, refresh_token)
        with self._lock:
            cached = self._cache.get(key)
            if cached and not force and cached[1] > time.time() + 30:
                return cached[0]
            response = requests.post(
                f"{base_url}/api/token/refresh/", json={"refresh": refresh_token}, timeout=_timeout()
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


def _timeout() -> Tuple[float, float]:
    return env_float("MEDIA_CONNECT_TIMEOUT", 5.0), env_float("MEDIA_READ_TIMEOUT", 30.0)


class _BoundedSession(requests.Session):
    """Every media request gets a timeout and refuses bodies above `MEDIA_MAX_BYTES`.

    It also remembers whether Label Studio refused the credentials: the SDK may try a second
    URL after a 401 and then re-raise the first URL's error, which would hide the 401.
    """

    def __init__(self):
        super().__init__()
        self.refusals = set()  # 401/403 answers seen
        self.downloaded = False  # a cache hit sends no request

    @property
    def unauthorized(self) -> bool:
        return 401 in self.refusals

    def request(self, method, url, **kwargs):
        kwargs.setdefault("timeout", _timeout())
        response = super().request(method, url, **kwargs)
        self.downloaded = self.downloaded or response.ok
        if response.status_code in (401, 403):
            self.refusals.add(response.status_code)
        limit = env_int("MEDIA_MAX_BYTES", 512 * 1024 * 1024)
        length = response.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > limit:
            response.close()
            raise PayloadTooLarge(f"{url} is {int(length)} bytes, above MEDIA_MAX_BYTES={limit}")
        return response


def media_cache_dir() -> str:
    path = os.getenv("MEDIA_CACHE_DIR") or os.path.join(os.getenv("MODEL_DIR", "."), "media-cache")
    os.makedirs(path, exist_ok=True)
    return path


_prune_lock = threading.Lock()


def prune_media_cache(cache_dir: str, max_bytes: int) -> int:
    """Delete the least recently used files until the cache holds at most `max_bytes`; return bytes freed."""
    with _prune_lock:
        entries = []
        for entry in os.scandir(cache_dir):
            if entry.is_file():
                stat = entry.stat()
                entries.append((max(stat.st_atime, stat.st_mtime), stat.st_size, entry.path))
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
        return freed


def _is_local_path(url: str) -> bool:
    """A file on this machine: `file://...`, or a path that exists (checked before URL prefixes, since
    `/data/...` may be a real directory inside a container)."""
    return url.startswith("file://") or os.path.isfile(url)


def get_local_path(
    url: str,
    task_id=None,
    hostname: Optional[str] = None,
    access_token: Optional[str] = None,
    cache_dir: Optional[str] = None,
) -> str:
    """Local file path for task media `url`, downloading (and caching) it when needed.

    Raises `NotFound` (404) when the file does not exist, `FailedDependency` (424) when it cannot
    be fetched, `BadRequest` for a value that is no URL or path; each message names the URL.
    """
    if not isinstance(url, str) or not url.strip():
        raise BadRequest(f"Task data value is not a media URL or path: {url!r}")
    if _is_local_path(url):
        path = url[len("file://"):] if url.startswith("file://") else url
        if not os.path.isfile(path):
            raise NotFound(f"File not found: {url}")
        return path
    if not url.startswith(_URI_PREFIXES):
        raise NotFound(f"File not found: {url}")

    base_url = (hostname or label_studio_url()).rstrip("/")
    token = access_token or label_studio_api_key()
    if not base_url and not url.startswith(("http://", "https://")):
        raise FailedDependency(f"Cannot fetch {url}: it is served by Label Studio and LABEL_STUDIO_URL is not set")
    cache_dir = cache_dir or media_cache_dir()
    pat = bool(token) and bool(base_url) and is_personal_access_token(token)

    def fetch(session, force_refresh=False):
        effective = _tokens.access_token(base_url, token, force=force_refresh) if pat else token
        with ls_io.http_session(session):
            return ls_io.get_local_path(
                url, cache_dir=cache_dir, hostname=base_url or None, access_token=effective or None,
                download_resources=True, task_id=task_id,
                image_dir=cache_dir,  # else the SDK creates ~/.local/share/label-studio to look for uploads
            )

    session = _BoundedSession()
    try:
        try:
            path = fetch(session)
        except requests.HTTPError:
            if not (pat and session.refusals):
                raise
            session = _BoundedSession()  # the access token may have been revoked: refresh once
            path = fetch(session, force_refresh=True)
    except (NotFound, FailedDependency, PayloadTooLarge, BadRequest):
        raise
    except requests.HTTPError as exc:
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
        raise FailedDependency(f"Cannot download {url}: no answer within {_timeout()[1]:g} s (MEDIA_READ_TIMEOUT)") from exc
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
        max_mb = env_int("MEDIA_CACHE_MAX_MB", 2048)
        prune_media_cache(cache_dir, max_mb * 1024 * 1024)
        if not os.path.exists(path):  # pruned right away: the cache is smaller than this one file
            raise PayloadTooLarge(f"{url} does not fit in MEDIA_CACHE_MAX_MB={max_mb}")
    return path


def check_label_studio_connection() -> str:
    """One line saying whether Label Studio is reachable with the configured URL and token.

    Called once at start-up (never on a request path); the token itself is never logged.
    """
    base_url, token = label_studio_url(), label_studio_api_key()
    if not base_url:
        return "LABEL_STUDIO_URL is not set: media under /data/upload, local and cloud storage cannot be fetched"
    problems = url_problems(base_url)
    if not base_url.startswith(("http://", "https://")):
        return "; ".join(problems)
    return "; ".join([_reachability(base_url, token)] + problems)


def _reachability(base_url: str, token: str) -> str:
    if not token:
        return f"Label Studio at {base_url}: LABEL_STUDIO_API_KEY is not set, uploads cannot be fetched"
    kind = "personal access token" if is_personal_access_token(token) else "legacy token"
    try:
        if kind == "personal access token":
            headers = {"Authorization": "Bearer " + _tokens.access_token(base_url, token)}
        else:
            headers = {"Authorization": "Token " + token}
        response = requests.get(f"{base_url}/api/current-user/whoami", headers=headers, timeout=(2, 3))
    except Exception as exc:  # reachability is advice only
        return f"Label Studio at {base_url} is not reachable: {type(exc).__name__}"
    if response.status_code == 200:
        return f"Label Studio at {base_url} is reachable, {kind} accepted"
    return f"Label Studio at {base_url} answered HTTP {response.status_code} to the {kind}: check LABEL_STUDIO_API_KEY"

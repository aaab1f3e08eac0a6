"""Reading request bodies from callers that may be slow or hostile.

A client that sends its headers and then trickles (or stops sending) its body holds a server thread
while the body is read; the read therefore has a total deadline, `REQUEST_BODY_TIMEOUT` seconds
(408 after it). JSON is parsed with a depth limit, `MAX_JSON_DEPTH`: deeper nesting is a 400, not a
RecursionError here or in any code that walks the body later.
"""

import json
import socket
from typing import Any, Dict

from .exceptions import BadRequest, RequestTimeout
from .settings import Settings
from .watchdog import WATCHDOG


def _client_socket(request):
    """The connection's socket under gunicorn or Werkzeug's server (None elsewhere)."""
    return request.environ.get("gunicorn.socket") or request.environ.get("werkzeug.socket")


def _stop_reading(sock) -> None:
    try:
        sock.shutdown(socket.SHUT_RD)  # ends a blocked read; the answer can still be written
    except (OSError, AttributeError):
        pass


def refuse_body(request) -> None:
    """The body of `request` will not be read (it is refused before): stop reading the connection,
    so that the server closes it after the answer instead of draining a slow client's body first
    (gunicorn waits up to 5 s for it, holding a thread, and ignores an app's `Connection: close`)."""
    _stop_reading(_client_socket(request))


def read_body(request, settings: Settings) -> bytes:
    """The raw body of the Flask `request`, read within `REQUEST_BODY_TIMEOUT` seconds (408 after:
    the shared watchdog shuts the reading side of the socket down, which ends a blocked read)."""
    sock = _client_socket(request)
    seconds = settings.request_body_timeout
    deadline = WATCHDOG.schedule(seconds, lambda: _stop_reading(sock))
    try:
        return request.get_data(cache=True)
    finally:
        # past the deadline, whatever the read did (failed, or took a cut-off body for complete): 408
        if not WATCHDOG.cancel(deadline):
            raise RequestTimeout(f"The request body was not received within {seconds:g} s (REQUEST_BODY_TIMEOUT)")


def parse_json_object(raw: bytes, max_depth: int) -> Dict[str, Any]:
    """`raw` as a JSON object, nested at most `max_depth` levels (`MAX_JSON_DEPTH`); else a 400 saying why."""
    try:
        body = json.loads(raw)
    except RecursionError:
        raise BadRequest(f"Request body is JSON nested deeper than MAX_JSON_DEPTH={max_depth}") from None
    except ValueError:  # includes undecodable bytes
        raise BadRequest("Request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise BadRequest("Request body must be a JSON object")
    if json_depth_exceeds(body, max_depth):
        raise BadRequest(f"Request body is JSON nested deeper than MAX_JSON_DEPTH={max_depth}")
    return body


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """True when `value` nests lists/objects more than `limit` levels (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False

"""What gunicorn_config.py does in each gunicorn worker.

- gunicorn answers some requests itself, before the app sees them (a request line or headers over
  its limits, a request it cannot parse), with an HTML page. `install_json_error_pages()` makes
  those answers JSON `{"status": <code>, "detail": "<message>"}`, like every answer of the app.
- `tell_app_its_threads(worker)` gives the app the number of threads the worker serves it with.
"""

import json
import logging

logger = logging.getLogger(__name__)


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """Drop-in for `gunicorn.util.write_error`, answering JSON."""
    from gunicorn import util

    body = json.dumps({"status": status_int, "detail": f"{reason}: {mesg}" if mesg else reason}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
    util.write_nonblock(sock, head + body)


def install_json_error_pages() -> None:
    """Replace gunicorn's HTML error pages by JSON in this (worker) process: gunicorn's workers
    call `gunicorn.util.write_error` for every answer they make themselves."""
    from gunicorn import util

    util.write_error = write_json_error


def tell_app_its_threads(worker) -> None:
    """Tell the app this worker loaded (`init_app`'s) how many threads serve it, before the first
    request: its admission gate then leaves `RESERVED_THREADS` of them free. The app cannot know
    otherwise: `_wsgi.py` builds it at import, whatever server imports it."""
    server = getattr(worker.wsgi, "extensions", {}).get("ml_server")
    if server is None:
        logger.warning("The WSGI app is not the one init_app builds: its admission gate does not know that "
                       "gunicorn serves it with %d threads", worker.cfg.threads)
        return
    server.serve_on_threads(worker.cfg.threads)

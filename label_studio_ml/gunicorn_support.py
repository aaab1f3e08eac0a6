"""gunicorn answers some requests itself, before the app sees them (a request line or headers over
its limits, a request it cannot parse), with an HTML page. `install_json_error_pages()` makes
those answers JSON `{"status": <code>, "detail": "<message>"}`, like every answer of the app.
"""

import json


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

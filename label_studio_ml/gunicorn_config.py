"""gunicorn settings for a Label Studio ML backend:
`gunicorn -c python:label_studio_ml.gunicorn_config _wsgi:app` (examples/yolo/start.sh does).

- `HOST`, `PORT` (9090), `WORKERS` (1), `THREADS`: the serving processes and their threads. Threads
  are at least `PREDICT_CONCURRENCY + PREDICT_QUEUE_SIZE + RESERVED_THREADS` (70 by default):
  requests waiting for a prediction slot wait on a thread of their own, and however many
  predictions run or wait (slow bodies included), `RESERVED_THREADS` stay free for `/health` and
  `/setup` (admission.py says what this does not cover). Idle threads cost little memory. Each
  worker tells its app the thread count it really serves with (a `--threads` on gunicorn's command
  line included), which sizes the app's admission gate.
- gunicorn's own error answers (a request line over 4094 bytes: 414, too many or too large
  headers: 431, a request it cannot parse: 400) are JSON `{"status", "detail"}` like the app's,
  not gunicorn's HTML pages.
"""

from label_studio_ml.admission import server_threads
from label_studio_ml.gunicorn_support import install_json_error_pages, tell_app_its_threads
from label_studio_ml.settings import Settings

_settings = Settings.from_env()
bind = f"{_settings.host}:{_settings.port}"
workers = _settings.workers
threads = server_threads(_settings)
timeout = 0  # predictions may be long; Label Studio applies its own timeouts


def post_worker_init(worker):
    install_json_error_pages()
    tell_app_its_threads(worker)

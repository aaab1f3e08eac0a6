#!/usr/bin/env bash
# Serve the YOLO backend with gunicorn, LOG_LEVEL (INFO) its log level. HOST (0.0.0.0), PORT (9090),
# WORKERS (1) and THREADS are read by label_studio_ml/gunicorn_config.py, which also gives enough
# threads that waiting and running predictions leave 2 free for /health and /setup; gunicorn's own
# error answers are JSON.
# Models load lazily on the first /predict that needs them, so this starts in seconds, offline too.
# Runtime state (cache.db, media cache, ONNX exports, Ultralytics settings) goes to MODEL_DIR,
# by default examples/yolo/data/server (git-ignored).
set -euo pipefail
# Relative MODEL_DIR / MODEL_ROOT are relative to where you started, not to this folder.
for name in MODEL_DIR MODEL_ROOT; do
    case "${!name:-}" in
        ""|/*) ;;
        *) export "$name=$PWD/${!name}" ;;
    esac
done
cd "$(dirname "$0")"
# Outside an active virtualenv, serve from the repository's .venv when scripts/install.sh made one
# (in the Docker image there is none: the image's Python serves).
REPO_VENV="${LS_ML_VENV:-$(cd ../.. && pwd)/.venv}"
if [ -z "${VIRTUAL_ENV:-}" ] && [ -z "${CONDA_PREFIX:-}" ] && [ -x "$REPO_VENV/bin/gunicorn" ]; then
    export PATH="$REPO_VENV/bin:$PATH"
fi
# Threads (THREADS, at least PREDICT_CONCURRENCY + PREDICT_QUEUE_SIZE + 2) come from the config.
exec gunicorn \
    --config python:label_studio_ml.gunicorn_config \
    --timeout 0 \
    --no-control-socket \
    --log-level "$(echo "${LOG_LEVEL:-info}" | tr '[:upper:]' '[:lower:]')" \
    _wsgi:app

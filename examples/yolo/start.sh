#!/usr/bin/env bash
# Serve the YOLO backend with gunicorn: PORT (9090), WORKERS (1), THREADS (4), LOG_LEVEL (INFO).
# Models load lazily on the first /predict that needs them, so this starts in seconds, offline too.
set -euo pipefail
cd "$(dirname "$0")"
exec gunicorn \
    --bind ":${PORT:-9090}" \
    --workers "${WORKERS:-1}" \
    --threads "${THREADS:-4}" \
    --timeout 0 \
    --no-control-socket \
    --log-level "$(echo "${LOG_LEVEL:-info}" | tr '[:upper:]' '[:lower:]')" \
    _wsgi:app

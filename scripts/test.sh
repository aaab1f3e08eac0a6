#!/usr/bin/env bash
# Set up everything the tests need on this machine, then run all test suites, in the active
# virtualenv or the repository's .venv (see scripts/python_env.sh).
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
    echo "Installing redis-server (Debian package) for the Redis store tests..."
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get install -y -q redis-server >/dev/null 2>&1 || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q redis-server >/dev/null; }
fi

bash scripts/install.sh --test
source scripts/python_env.sh

exec "$PYTHON" -m pytest "$@"

#!/usr/bin/env bash
# Install the SDK (editable) and the YOLO backend's dependencies into the active virtualenv, or
# into the repository's .venv when none is active (scripts/python_env.sh).
# Usage: bash scripts/install.sh [--test]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/python_env.sh
PIP="$PYTHON -m pip install -q --disable-pip-version-check"
$PIP -e . -r examples/yolo/requirements-base.txt -r examples/yolo/requirements.txt
if [ "${1:-}" = "--test" ]; then
    $PIP -r requirements-test.txt
fi
# Exactly one OpenCV, the headless one: a GUI build pulled in by anything else shadows it.
if "$PYTHON" -m pip show opencv-python >/dev/null 2>&1; then
    "$PYTHON" -m pip uninstall -y -q opencv-python
    "$PYTHON" -m pip install -q --force-reinstall --no-deps opencv-python-headless
fi
"$PYTHON" - <<'PY'
import importlib.metadata as md
cv = sorted(d.metadata["Name"] for d in md.distributions() if d.metadata["Name"].lower().startswith("opencv"))
assert cv == ["opencv-python-headless"], f"expected only opencv-python-headless, found {cv}"
PY

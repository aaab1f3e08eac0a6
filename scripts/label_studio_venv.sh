#!/usr/bin/env bash
# Make (once) a virtualenv holding the real Label Studio server used by the end-to-end tests, and
# print its path on stdout (progress goes to stderr). Reused while it works; rebuilt otherwise.
#   LABEL_STUDIO_VERSION   (1.23.2)
#   LS_VENV                (${LS_ML_TEST_CACHE:-~/.cache/label-studio-ml-tests}/ls-venv)
# Label Studio pins its own Django, SDK, ... so it never shares the backend's environment.
set -euo pipefail
VERSION="${LABEL_STUDIO_VERSION:-1.23.2}"
CACHE="${LS_ML_TEST_CACHE:-$HOME/.cache/label-studio-ml-tests}"
VENV="${LS_VENV:-$CACHE/ls-venv}"
PYTHON="${PYTHON:-python3}"

works() {
    [ -f "$VENV/.complete" ] && [ -x "$VENV/bin/label-studio" ] &&
        "$VENV/bin/python" - "$VERSION" <<'PY' >/dev/null 2>&1
import sys
from importlib.metadata import version
assert version("label-studio") == sys.argv[1]
# its main dependencies (importing label_studio.server would write a database under ~/.local/share)
import django, label_studio, rest_framework  # noqa: E401,F401
PY
}

mkdir -p "$(dirname "$VENV")"
# Several test sessions (or CI jobs) may start at once: one builds, the others wait for it.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$VENV.lock"
    flock 9
fi
if ! works; then
    echo "Installing label-studio==$VERSION into $VENV (a few minutes, once)..." >&2
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >&2
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "label-studio==$VERSION" >&2
    touch "$VENV/.complete"
    works || { echo "label-studio==$VERSION installed into $VENV but does not import" >&2; exit 1; }
fi
echo "$VENV"

# Sourced by install.sh and test.sh: pick the Python environment the README commands use.
#   - inside an active virtualenv or conda environment: that one;
#   - otherwise the repository's own .venv (git-ignored), created on first use, because system
#     Pythons on Debian/Ubuntu refuse `pip install` (PEP 668, "externally managed environment").
# LS_ML_VENV overrides where that virtualenv lives. Exports PYTHON and puts its bin/ on PATH.
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -n "${VIRTUAL_ENV:-}" ] || [ -n "${CONDA_PREFIX:-}" ]; then
    PYTHON="$(command -v python || command -v python3)"
    echo "Using the active environment ${VIRTUAL_ENV:-$CONDA_PREFIX}" >&2
else
    LS_ML_VENV="${LS_ML_VENV:-$REPO_ROOT/.venv}"
    if [ ! -x "$LS_ML_VENV/bin/python" ]; then
        echo "No active virtualenv: creating $LS_ML_VENV (activate another one first to use it instead)" >&2
        python3 -m venv "$LS_ML_VENV" || {
            echo "python3 -m venv failed: install the venv module (Debian/Ubuntu: apt-get install python3-venv)" >&2
            exit 1
        }
    fi
    echo "Using the virtualenv $LS_ML_VENV" >&2
    export VIRTUAL_ENV="$LS_ML_VENV"
    export PATH="$LS_ML_VENV/bin:$PATH"
    PYTHON="$LS_ML_VENV/bin/python"
fi
export PYTHON

#!/usr/bin/env bash
# GPU check (README "Performance"): on CUDA the answers equal the CPU's for every task type, the
# speed-up of 8-task requests over single-task ones (FP32 and YOLO_HALF=true), one training epoch.
# Under 5 minutes; exits 2 at once when PyTorch sees no CUDA device, 1 when answers differ.
# Usage, from anywhere, with the repository's environment installed (scripts/install.sh --test):
#   bash examples/yolo/benchmarks/gpu_check.sh [--weights FILE]
set -euo pipefail
cd "$(dirname "$0")/../../.."
source scripts/python_env.sh
if ! "$PYTHON" -c "import torch, ultralytics" 2>/dev/null; then
    echo "gpu_check: torch and ultralytics are not installed in $PYTHON's environment: run bash scripts/install.sh --test" >&2
    exit 2
fi
exec timeout 300 "$PYTHON" examples/yolo/benchmarks/gpu_check.py "$@"

#!/usr/bin/env bash
# Creates .venv (once) and installs the project into it with what the tests need.
# The CPU build of torch 2.13 is installed first, so pip never pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    $PIP install -q "torch==2.13.0" || $PIP install -q "torch>=2.5"
fi
$PIP install -q -e ".[dev]"

#!/usr/bin/env bash
# The GPU checks in one command (a few minutes on one GPU); --dry_run runs them on the CPU at toy sizes.
# See benchmarks/gpu_check.py for what each check does and prints.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
exec "$PYTHON" benchmarks/gpu_check.py "$@"

#!/usr/bin/env bash
# Sets everything up, then runs the demo on the project's own defaults.
set -euo pipefail
cd "$(dirname "$0")"
bash setup.sh
exec .venv/bin/python -m tencentpretrain.demo "$@"

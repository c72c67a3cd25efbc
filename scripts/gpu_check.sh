#!/usr/bin/env bash
# One-call GPU check (see scripts/gpu_check.py): bash scripts/gpu_check.sh [--device cpu] [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f .venv/bin/activate ] && [ -z "${VIRTUAL_ENV:-}" ]; then . .venv/bin/activate; fi
exec python scripts/gpu_check.py "$@"

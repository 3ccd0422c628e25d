#!/usr/bin/env bash
# README command 1: set up (if needed), generate the demo data (if missing), train, evaluate.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/python" tools/run_demo.py "$@"

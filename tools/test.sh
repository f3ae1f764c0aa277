#!/usr/bin/env bash
# Set up (first run only) and run the whole test suite, lint and type check included.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/bootstrap.sh --test
# Spinning OpenMP threads slow PyTorch ~50x when test processes share the 2 cores (see inspector/cli.py).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
.venv/bin/ruff check inspector tools tests
.venv/bin/mypy
exec .venv/bin/python -m pytest -q "$@"

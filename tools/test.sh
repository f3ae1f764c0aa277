#!/usr/bin/env bash
# Set up (first run only) and run the whole test suite, lint and type check included.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/bootstrap.sh --test
# (OMP_WAIT_POLICY=PASSIVE, which keeps PyTorch fast on shared cores, is set by the inspector package itself.)
.venv/bin/ruff check inspector tools tests
.venv/bin/ruff format --check --quiet inspector tools tests
.venv/bin/mypy
exec .venv/bin/python -m pytest -q "$@"

#!/usr/bin/env bash
# Set up (first run only) and run the whole test suite, type check included.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/bootstrap.sh --test
.venv/bin/mypy
exec .venv/bin/python -m pytest -q "$@"

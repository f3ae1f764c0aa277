#!/usr/bin/env bash
# Set up (first run only) and run the embedded demo: no camera, no GPU, no external data.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/bootstrap.sh
exec .venv/bin/inspector demo "$@"

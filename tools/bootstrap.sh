#!/usr/bin/env bash
# One-time, idempotent set-up on a fresh machine: Python venv with the pinned torch, the package, and
# (with --test) the Debian tools the integration tests start and the npm packages of tests/plc/node.
# --genicam (implied by --test): Aravis for kind = "genicam" cameras (GigE Vision / USB3 Vision), Debian's
# packages, and Debian's GObject introspection (gi) linked into the virtual environment.
# Usage: tools/bootstrap.sh [--test | --genicam]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
VENV=.venv
# the stamp changes with the dependencies and with the C++ kernel the install builds
STAMP=$VENV/.installed-$(cat pyproject.toml inspector/model/_nearest.cpp | sha256sum | cut -c1-16)

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
if [ ! -f "$STAMP" ]; then
    "$VENV/bin/python" -m pip install -q --upgrade pip
    # torch first, pinned: these wheels lie on this machine's disk; other versions download gigabytes.
    "$VENV/bin/python" -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
    "$VENV/bin/python" -m pip install -q -e ".[dev]"
    rm -f "$VENV"/.installed-*
    touch "$STAMP"
fi

if [ "${1:-}" = "--test" ]; then
    # ffmpeg serves the MJPEG camera; prometheus (with promtool) scrapes the daemon; systemd-analyze verifies
    # the units; gcc, pkg-config, libzmq3-dev, libcjson-dev, libpng-dev build the integration guide's C programs;
    # chromium and chromium-driver load the live view in a real headless browser (Selenium drives it);
    # postgresql: the parts database tests start a real server (initdb + pg_ctl as user postgres); sqlite3:
    # the audit test edits a row with the sqlite3 client; mosquitto (with mosquitto_passwd) is the broker the
    # MQTT tests start, mosquitto-clients the docs' mosquitto_sub, openssl makes their test CA.
    need=()
    for pkg in ffmpeg prometheus systemd gcc pkg-config libzmq3-dev libcjson-dev libpng-dev chromium chromium-driver postgresql sqlite3 mosquitto mosquitto-clients openssl; do
        dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
    done
    if [ ${#need[@]} -gt 0 ]; then
        if [ "$(id -u)" -ne 0 ]; then
            echo "bootstrap: missing Debian packages ${need[*]}; install them (apt-get install ${need[*]}) or run as root" >&2
            exit 1
        fi
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    fi
    # node-opcua, the second OPC UA stack tests/plc/test_conformance.py runs against the daemon: the exact
    # versions of tests/plc/node/package-lock.json, reinstalled only when the lock file changes.
    if ! command -v npm >/dev/null; then
        if [ "$(id -u)" -ne 0 ]; then
            echo "bootstrap: node and npm are missing; install them (apt-get install nodejs npm) or run as root" >&2
            exit 1
        fi
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
    fi
    NODE_STAMP=tests/plc/node/node_modules/.installed-$(sha256sum tests/plc/node/package-lock.json | cut -c1-16)
    if [ ! -f "$NODE_STAMP" ]; then
        (cd tests/plc/node && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
        touch "$NODE_STAMP"
    fi
fi

apt_install() {  # Debian packages not installed yet, installed (as root) in one go
    local need=() pkg
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
    done
    if [ ${#need[@]} -gt 0 ]; then
        if [ "$(id -u)" -ne 0 ]; then
            echo "bootstrap: missing Debian packages ${need[*]}; install them (apt-get install ${need[*]}) or run as root" >&2
            exit 1
        fi
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    fi
}

if [ "${1:-}" = "--test" ] || [ "${1:-}" = "--genicam" ]; then
    # Aravis: the library and its typelib for the camera processes; aravis-tools has arv-fake-gv-camera-0.8
    # (the real-protocol fake camera the tests start) and arv-camera-test-0.8 (tools/bench_genicam.py's
    # reference); aravis-tools-cli has arv-tool-0.8, which lists cameras and their features.
    apt_install gir1.2-aravis-0.8 python3-gi aravis-tools aravis-tools-cli
    # gi: Debian's PyGObject, built for Debian's Python 3.11, is linked into the venv when the venv runs the
    # same minor version (one symlink, nothing compiled); otherwise PyGObject is built from PyPI against
    # Debian's GObject introspection (about 2 minutes and the -dev packages).
    SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    VENV_PY=$("$VENV/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    DEBIAN_PY=$(/usr/bin/python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    if ! "$VENV/bin/python" -W ignore -c 'import gi; gi.require_version("Aravis", "0.8")' 2>/dev/null; then
        if [ "$VENV_PY" = "$DEBIAN_PY" ] && [ -d /usr/lib/python3/dist-packages/gi ]; then
            ln -sfn /usr/lib/python3/dist-packages/gi "$SITE/gi"
        else
            apt_install libgirepository1.0-dev libcairo2-dev pkg-config gcc
            "$VENV/bin/python" -m pip install -q "PyGObject<3.51"  # 3.51+ needs GLib 2.80's girepository-2.0
        fi
    fi
    "$VENV/bin/python" -W ignore -c 'import gi; gi.require_version("Aravis", "0.8"); from gi.repository import Aravis'
fi

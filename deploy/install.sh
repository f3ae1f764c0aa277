#!/usr/bin/env bash
# Install inspector as a systemd service on a line PC (Debian/Ubuntu with systemd), from a checkout of the repo.
#
# Usage: sudo deploy/install.sh [options]
#   --venv DIR          virtual environment of the program (default /opt/inspector/venv); the units' ExecStart
#                       is rewritten to DIR/bin/inspector
#   --wheelhouse DIR    install offline from wheels in DIR (made on a connected machine with
#                       `pip wheel -w DIR /path/to/repo`); default: install from this checkout with pip
#   --no-python         skip the virtual environment and the package (units, configs and monitoring files only)
#   --instance NAME     set up instance NAME of inspector@.service (config /etc/inspector/NAME.toml); repeatable
#   --enable            enable and start the service: inspector.service, or inspector@NAME for each --instance
#   -h, --help          this text
# Environment:
#   DESTDIR   stage every file under this directory instead of / (packaging, tests): no user is created,
#             nothing is chown'ed, systemctl is not called, and root is not required
#   PYTHON    interpreter for the virtual environment (default python3)
#
# Existing configuration files in /etc/inspector are never overwritten. Re-running upgrades the program,
# the units and the monitoring files.
set -euo pipefail

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEFAULT_VENV=/opt/inspector/venv
SERVICE_USER=inspector
CONFIG_DIR=/etc/inspector
UNIT_DIR=/etc/systemd/system
SHARE_DIR=/usr/share/inspector
DOC_DIR=/usr/share/doc/inspector
INSTANCE_PATTERN='^[A-Za-z0-9][A-Za-z0-9_-]*$'
DEFAULT_BUS_PORT=5556  # bus.bind and metrics.port of config/inspector.example.toml
DEFAULT_METRICS_PORT=9108

DESTDIR=${DESTDIR:-}
PYTHON=${PYTHON:-python3}
VENV=$DEFAULT_VENV
WHEELHOUSE=""
WITH_PYTHON=1
ENABLE=0
INSTANCES=()

die() { echo "install.sh: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --venv) [ $# -ge 2 ] || die "--venv needs a directory"; VENV=$2; shift 2 ;;
        --wheelhouse) [ $# -ge 2 ] || die "--wheelhouse needs a directory"; WHEELHOUSE=$2; shift 2 ;;
        --no-python) WITH_PYTHON=0; shift ;;
        --instance)
            [ $# -ge 2 ] || die "--instance needs a name"
            [[ $2 =~ $INSTANCE_PATTERN ]] || die "--instance '$2': use letters, digits, _ and - only"
            INSTANCES+=("$2"); shift 2 ;;
        --enable) ENABLE=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done

case "$VENV" in /*) ;; *) die "--venv '$VENV' must be an absolute path" ;; esac
if [ -z "$DESTDIR" ] && [ "$(id -u)" -ne 0 ]; then
    die "run as root (or set DESTDIR to stage the files)"
fi
if [ -n "$WHEELHOUSE" ] && [ ! -d "$WHEELHOUSE" ]; then
    die "--wheelhouse '$WHEELHOUSE' is not a directory"
fi

create_user() {
    if [ -n "$DESTDIR" ]; then
        return
    fi
    if ! getent passwd "$SERVICE_USER" >/dev/null; then
        useradd --system --user-group --home-dir /var/lib/inspector --no-create-home \
            --shell /usr/sbin/nologin --comment "inspector daemon" "$SERVICE_USER"
        echo "created system user $SERVICE_USER"
    fi
    if getent group video >/dev/null; then
        usermod --append --groups video "$SERVICE_USER"
    fi
}

install_python() {
    [ "$WITH_PYTHON" -eq 1 ] || return 0
    local venv="$DESTDIR$VENV"
    if [ ! -x "$venv/bin/python" ]; then
        "$PYTHON" -m venv "$venv"
    fi
    if [ -n "$WHEELHOUSE" ]; then
        "$venv/bin/python" -m pip install --no-index --find-links "$WHEELHOUSE" --upgrade inspector
    else
        "$venv/bin/python" -m pip install --upgrade "$REPO_DIR"
    fi
    echo "installed the program in $VENV"
}

install_units() {
    install -d -m 0755 "$DESTDIR$UNIT_DIR"
    local unit
    for unit in inspector.service inspector@.service inspector-opcua.service; do
        sed "s#$DEFAULT_VENV/bin/inspector#$VENV/bin/inspector#g" "$REPO_DIR/deploy/$unit" >"$DESTDIR$UNIT_DIR/$unit.tmp"
        chmod 0644 "$DESTDIR$UNIT_DIR/$unit.tmp"
        mv "$DESTDIR$UNIT_DIR/$unit.tmp" "$DESTDIR$UNIT_DIR/$unit"
    done
    echo "installed units in $UNIT_DIR"
}

# install_config NAME OFFSET: copy the example to NAME.toml, with bus and metrics ports moved up by OFFSET so that
# instances on one machine do not collide (instance 0: 5556/9108, instance 1: 5557/9109, ...).
install_config() {
    local name=$1 offset=$2 target="$DESTDIR$CONFIG_DIR/$1.toml"
    if [ -e "$target" ]; then
        echo "kept existing $CONFIG_DIR/$name.toml"
        return
    fi
    local bus_port=$((DEFAULT_BUS_PORT + offset)) metrics_port=$((DEFAULT_METRICS_PORT + offset))
    sed -e "s#^bind = \"tcp://127.0.0.1:$DEFAULT_BUS_PORT\"#bind = \"tcp://127.0.0.1:$bus_port\"#" \
        -e "s#^port = $DEFAULT_METRICS_PORT\$#port = $metrics_port#" \
        "$REPO_DIR/config/inspector.example.toml" >"$target.tmp"
    if ! grep -q "^port = $metrics_port\$" "$target.tmp" || ! grep -q "127.0.0.1:$bus_port\"" "$target.tmp"; then
        echo "warning: could not set the ports in $CONFIG_DIR/$name.toml; set bus.bind and metrics.port" >&2
    fi
    chmod 0640 "$target.tmp"
    mv "$target.tmp" "$target"
    if [ -z "$DESTDIR" ]; then
        chgrp "$SERVICE_USER" "$target"
    fi
    echo "wrote $CONFIG_DIR/$name.toml from the example (bus port $bus_port, metrics port $metrics_port):" \
        "edit cameras and gallery before starting"
}

install_configs() {
    install -d -m 0755 "$DESTDIR$CONFIG_DIR"
    if [ ! -f "$REPO_DIR/config/inspector.example.toml" ]; then
        echo "warning: config/inspector.example.toml missing; write $CONFIG_DIR/*.toml by hand" >&2
        return
    fi
    if [ ${#INSTANCES[@]} -eq 0 ]; then
        install_config inspector 0
    fi
    local index
    for index in "${!INSTANCES[@]}"; do
        install_config "${INSTANCES[$index]}" "$index"
    done
}

install_monitoring() {
    install -d -m 0755 "$DESTDIR$SHARE_DIR/prometheus" "$DESTDIR$SHARE_DIR/grafana" "$DESTDIR$DOC_DIR"
    install -m 0644 "$REPO_DIR/deploy/prometheus/prometheus.yml" "$REPO_DIR/deploy/prometheus/alerts.yml" \
        "$DESTDIR$SHARE_DIR/prometheus/"
    install -m 0644 "$REPO_DIR/deploy/grafana/inspector-dashboard.json" "$DESTDIR$SHARE_DIR/grafana/"
    install -m 0644 "$REPO_DIR/deploy/grafana/inspector-parts-dashboard.json" "$DESTDIR$SHARE_DIR/grafana/"
    local doc
    for doc in docs/integration.md docs/verdict.schema.json docs/heartbeat.schema.json; do
        if [ -f "$REPO_DIR/$doc" ]; then
            install -m 0644 "$REPO_DIR/$doc" "$DESTDIR$DOC_DIR/"
        fi
    done
    echo "installed Prometheus rules and the Grafana dashboard in $SHARE_DIR, docs in $DOC_DIR"
}

activate() {
    if [ -n "$DESTDIR" ] || [ ! -d /run/systemd/system ]; then
        return
    fi
    systemctl daemon-reload
    [ "$ENABLE" -eq 1 ] || return 0
    if [ ${#INSTANCES[@]} -eq 0 ]; then
        systemctl enable --now inspector.service
    else
        local name
        for name in "${INSTANCES[@]}"; do
            systemctl enable --now "inspector@$name.service"
        done
    fi
}

create_user
install_python
install_units
install_configs
install_monitoring
activate

cat <<EOF
done. Next:
  1. edit $CONFIG_DIR/*.toml (cameras, worker.gallery, bus.bind, metrics.port), then
     $VENV/bin/inspector check-config $CONFIG_DIR/inspector.toml
  2. build galleries as user $SERVICE_USER into /var/lib/inspector/galleries (inspector gallery build ...)
  3. systemctl enable --now inspector         (or inspector@NAME for each line)
  4. Prometheus: merge $SHARE_DIR/prometheus/*.yml into /etc/prometheus/ (promtool check config);
     Grafana: import $SHARE_DIR/grafana/inspector-dashboard.json (and inspector-parts-dashboard.json
     with a PostgreSQL data source on the parts database: docs/parts.md)
  GPU machines: load nvidia-uvm at boot (echo nvidia-uvm > /etc/modules-load.d/nvidia-uvm.conf), since the
  hardened unit cannot create device nodes.
EOF

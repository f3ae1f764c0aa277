"""deploy/inspector-opcua.service: the OPC UA server's unit verifies, starts the bridge, and is hardened."""

from __future__ import annotations

import re
from pathlib import Path

from tests.deploy.test_deploy import (
    DEPLOY,
    SHIPPED_BINARY,
    inspector_binary,
    one,
    parse_unit,
    require,
    run_tool,
)

UNIT = "inspector-opcua.service"
MAX_EXPOSURE = 2.0  # systemd-analyze security's exposure score the unit must stay at or under


def staged(tmp_path: Path) -> Path:
    text = (DEPLOY / UNIT).read_text(encoding="utf-8")
    assert SHIPPED_BINARY in text
    unit = tmp_path / UNIT
    unit.write_text(text.replace(SHIPPED_BINARY, inspector_binary()), encoding="utf-8")
    return unit


def test_the_opcua_unit_passes_systemd_analyze_verify_without_any_warning(tmp_path: Path) -> None:
    analyze = require("systemd-analyze", "systemd")
    result = run_tool([analyze, "verify", "--man=no", str(staged(tmp_path))], cwd=tmp_path)
    assert result.returncode == 0 and (result.stdout + result.stderr).strip() == "", result.stderr


def test_the_opcua_unit_runs_the_bridge_as_a_notify_service_of_the_daemons_config() -> None:
    sections = parse_unit((DEPLOY / UNIT).read_text(encoding="utf-8"))
    assert one(sections, "Service", "ExecStart") == (
        f"{SHIPPED_BINARY} opcua --config /etc/inspector/inspector.toml"
    )
    assert one(sections, "Service", "Type") == "notify"  # inspector opcua sends READY=1 once it listens
    assert one(sections, "Service", "PrivateDevices") == "yes"
    assert "78" in one(sections, "Service", "RestartPreventExitStatus").split()


def test_the_opcua_unit_exposure_is_low(tmp_path: Path) -> None:
    analyze = require("systemd-analyze", "systemd")
    result = run_tool(
        [analyze, "security", "--offline=yes", "--no-pager", str(staged(tmp_path))], cwd=tmp_path
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout + result.stderr)
    assert found is not None, result.stdout + result.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE, result.stdout

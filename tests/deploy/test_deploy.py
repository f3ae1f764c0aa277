"""Tests for deploy/ and docs/integration.md: systemd units, install.sh, alert rules, example subscribers."""

from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
import zmq

from inspector.bus.publisher import Publisher
from inspector.bus.wire import Heartbeat, new_boot_id, rfc3339
from inspector.config.bus import BusConfig
from inspector.config.load import load_config
from inspector.core.names import EXIT_CONFIG, Verdict
from inspector.core.records import Frame, Outcome
from tests.support import REPO_ROOT, bus_outcome

DEPLOY = REPO_ROOT / "deploy"
UNITS = ("inspector.service", "inspector@.service")
SHIPPED_BINARY = "/opt/inspector/venv/bin/inspector"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"
TOOL_TIMEOUT_S = 60
STOP_MARGIN_S = 10.0  # TimeoutStopSec must leave this much beyond the drain and the bus linger

UnitSections = dict[str, list[tuple[str, str]]]


def require(tool: str, package: str) -> str:
    """Path of ``tool``, or skip the test naming the Debian package that provides it."""
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} not found: install Debian package '{package}' (apt-get install -y {package})")
    return path


def run_tool(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing text output."""
    return subprocess.run(args, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False, **kwargs)


def inspector_binary() -> str:
    """The ``inspector`` console script of the running environment (a real executable for ExecStart)."""
    path = Path(sys.executable).parent / "inspector"
    assert path.is_file() and os.access(path, os.X_OK), f"{path} missing: pip install -e . first"
    return str(path)


def parse_unit(text: str) -> UnitSections:
    """Sections of a unit file as ordered (key, value) lists; repeated keys (DeviceAllow) are kept."""
    sections: UnitSections = {}
    current: list[tuple[str, str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"setting outside a section: {line!r}"
        key, _, value = line.partition("=")
        current.append((key.strip(), value.strip()))
    return sections


def values(sections: UnitSections, section: str, key: str) -> list[str]:
    """Every value of ``key`` in ``section``."""
    return [v for k, v in sections.get(section, []) if k == key]


def one(sections: UnitSections, section: str, key: str) -> str:
    """The single value of ``key`` in ``section``."""
    found = values(sections, section, key)
    assert len(found) == 1, f"[{section}] {key}: expected one value, found {found}"
    return found[0]


@pytest.fixture
def staged_units(tmp_path: Path) -> Iterator[Path]:
    """The shipped units copied to a folder with ExecStart pointing at this environment's ``inspector``."""
    binary = inspector_binary()
    for unit in UNITS:
        text = (DEPLOY / unit).read_text(encoding="utf-8")
        assert SHIPPED_BINARY in text, f"{unit}: ExecStart does not use {SHIPPED_BINARY}"
        (tmp_path / unit).write_text(text.replace(SHIPPED_BINARY, binary), encoding="utf-8")
    yield tmp_path


@pytest.mark.parametrize("unit", ["inspector.service", "inspector@line1.service"])
def test_units_pass_systemd_analyze_verify_without_any_warning(staged_units: Path, unit: str) -> None:
    # verify exits 0 on unknown keys or bad values and only prints them, so any output is a failure.
    # It checks that ExecStart is executable (hence the staged copy) but not that User= exists.
    analyze = require("systemd-analyze", "systemd")
    result = run_tool([analyze, "verify", "--man=no", str(staged_units / unit)], cwd=staged_units)
    assert result.returncode == 0, result.stderr
    assert (result.stdout + result.stderr).strip() == ""


def test_proxy_unit_of_the_integration_guide_passes_verify(tmp_path: Path) -> None:
    analyze = require("systemd-analyze", "systemd")
    unit = tmp_path / "inspector-proxy.service"
    text = guide_code("Many lines, one bus", "ini")
    assert SHIPPED_BINARY + " proxy --frontend" in text
    unit.write_text(text.replace(SHIPPED_BINARY, inspector_binary()), encoding="utf-8")
    result = run_tool([analyze, "verify", "--man=no", str(unit)])
    assert result.returncode == 0 and (result.stdout + result.stderr).strip() == "", result.stderr


def test_verify_reports_a_misspelled_key_so_the_check_can_fail(staged_units: Path) -> None:
    analyze = require("systemd-analyze", "systemd")
    unit = staged_units / "inspector.service"
    unit.write_text(unit.read_text().replace("WatchdogSec=", "WatchdogSecs="), encoding="utf-8")
    result = run_tool([analyze, "verify", "--man=no", str(unit)])
    assert "Unknown key 'WatchdogSecs'" in result.stderr


@pytest.mark.parametrize("unit", UNITS)
def test_units_have_lifecycle_and_hardening_settings(unit: str) -> None:
    sections = parse_unit((DEPLOY / unit).read_text(encoding="utf-8"))
    service = "Service"
    assert one(sections, service, "Type") == "notify"
    assert one(sections, service, "NotifyAccess") == "main"
    assert one(sections, service, "Restart") == "on-failure"
    assert str(EXIT_CONFIG) in one(sections, service, "RestartPreventExitStatus").split()
    assert one(sections, service, "User") == "inspector"
    assert one(sections, service, "KillMode") == "mixed"
    assert one(sections, service, "ProtectSystem") == "strict"
    for key in ("NoNewPrivileges", "PrivateTmp", "ProtectKernelModules", "RestrictSUIDSGID"):
        assert one(sections, service, key) == "yes", key
    assert one(sections, service, "PrivateDevices") == "no"  # "yes" would hide /dev/nvidia*
    assert one(sections, service, "DevicePolicy") == "closed"
    assert set(values(sections, service, "DeviceAllow")) == {"char-nvidia* rw", "char-video4linux rw"}
    assert {"AF_UNIX", "AF_INET", "AF_INET6"} <= set(
        one(sections, service, "RestrictAddressFamilies").split()
    )
    assert one(sections, service, "StateDirectory").startswith("inspector")
    assert one(sections, "Install", "WantedBy") == "multi-user.target"
    for key in ("PrivateUsers", "PrivateMounts", "RemoveIPC", "LockPersonality", "RestrictNamespaces"):
        assert one(sections, service, key) == "yes", key
    assert one(sections, service, "ProtectProc") == "invisible"
    assert one(sections, service, "UMask") == "0077"
    assert one(sections, service, "IPAddressDeny") == "any"
    assert one(sections, service, "IPAddressAllow") == "localhost"
    assert values(sections, service, "SystemCallFilter") == ["@system-service", "~@privileged"]
    assert one(sections, service, "SystemCallErrorNumber") == "EPERM"
    assert not values(sections, service, "MemoryDenyWriteExecute")  # breaks oneDNN: tools/bench_mdwe.py


MAX_EXPOSURE = 2.0  # systemd-analyze security: 3.5 before the trust issue's hardening


@pytest.mark.parametrize("unit", ["inspector.service", "inspector@line1.service"])
def test_units_exposure_is_at_most_2(staged_units: Path, unit: str) -> None:
    analyze = require("systemd-analyze", "systemd")
    if unit.startswith("inspector@"):
        shutil.copyfile(staged_units / "inspector@.service", staged_units / unit)
    result = run_tool([analyze, "security", "--offline=yes", "--no-pager", str(staged_units / unit)])
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert found, result.stdout[-2000:] + result.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE, result.stdout


@pytest.mark.parametrize("unit", UNITS)
def test_unit_timeouts_fit_the_daemon_defaults(unit: str) -> None:
    sections = parse_unit((DEPLOY / unit).read_text(encoding="utf-8"))
    defaults = load_config(None)
    drain_s = defaults.shutdown_timeout_s + defaults.bus.linger_ms / 1000.0 + defaults.archive.flush_timeout_s
    assert float(one(sections, "Service", "TimeoutStopSec")) >= drain_s + STOP_MARGIN_S
    watchdog_s = float(one(sections, "Service", "WatchdogSec"))
    # The daemon pings at half WatchdogSec and stops after worker.stall_timeout_s without progress, so a
    # hung worker is restarted about stall_timeout_s + WatchdogSec after it hung.
    assert 0 < watchdog_s <= defaults.worker.stall_timeout_s


MEMORY_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
DAEMON_BASE_FDS = 256  # sockets, pipes, camera processes, files: measured about 60 on a two-camera daemon


@pytest.mark.parametrize("unit", UNITS)
def test_units_raise_the_descriptor_limit_above_every_listener_cap_and_bound_memory(unit: str) -> None:
    sections = parse_unit((DEPLOY / unit).read_text(encoding="utf-8"))
    defaults = load_config(None)
    held = (
        defaults.results.max_connections
        + defaults.liveview.max_connections
        + defaults.metrics.max_connections
        + defaults.bus.max_subscribers
    )
    assert int(one(sections, "Service", "LimitNOFILE")) >= 4 * (held + DAEMON_BASE_FDS)
    memory = re.fullmatch(r"(\d+)([KMGT])", one(sections, "Service", "MemoryMax"))
    assert memory is not None and int(memory.group(1)) * MEMORY_UNITS[memory.group(2)] >= 4 << 30


def test_template_unit_differs_only_by_instance_settings() -> None:
    plain = parse_unit((DEPLOY / "inspector.service").read_text(encoding="utf-8"))
    template = parse_unit((DEPLOY / "inspector@.service").read_text(encoding="utf-8"))
    assert one(template, "Service", "ExecStart").endswith("--config /etc/inspector/%i.toml")
    assert one(template, "Service", "StateDirectory") == "inspector/%i"
    instance_keys = {"Description", "ExecStart", "WorkingDirectory", "StateDirectory", "RuntimeDirectory"}
    for section in ("Unit", "Service", "Install"):
        same_plain = [(k, v) for k, v in plain[section] if k not in instance_keys]
        same_template = [
            (k, v) for k, v in template[section] if k not in instance_keys | {"SyslogIdentifier"}
        ]
        assert same_plain == same_template, section


def test_install_script_stages_units_configs_and_monitoring_files(tmp_path: Path) -> None:
    stage = tmp_path / "root"
    binary_dir = str(Path(inspector_binary()).parent.parent)
    env = {**os.environ, "DESTDIR": str(stage)}
    args = ["bash", str(DEPLOY / "install.sh"), "--no-python", "--venv", binary_dir]
    result = run_tool([*args, "--instance", "line1", "--instance", "line2"], env=env)
    assert result.returncode == 0, result.stderr
    units = stage / "etc/systemd/system"
    for unit in UNITS:
        text = (units / unit).read_text(encoding="utf-8")
        assert f"ExecStart={binary_dir}/bin/inspector run --config" in text
        assert text.replace(f"{binary_dir}/bin/inspector", SHIPPED_BINARY) == (DEPLOY / unit).read_text()
    line1 = load_config(stage / "etc/inspector/line1.toml")
    line2 = load_config(stage / "etc/inspector/line2.toml")
    assert (line1.bus.bind, line1.metrics.port) == ("tcp://127.0.0.1:5556", 9108)
    assert (line2.bus.bind, line2.metrics.port) == ("tcp://127.0.0.1:5557", 9109)
    assert oct((stage / "etc/inspector/line2.toml").stat().st_mode & 0o777) == "0o640"
    share = stage / "usr/share/inspector"
    assert (share / "prometheus/alerts.yml").read_bytes() == ALERTS.read_bytes()
    for dashboard in ("grafana/inspector-dashboard.json", "grafana/inspector-parts-dashboard.json"):
        assert (share / dashboard).read_bytes() == (DEPLOY / dashboard).read_bytes()
    # A second run keeps the edited configuration.
    (stage / "etc/inspector/line1.toml").write_text("# edited\n", encoding="utf-8")
    again = run_tool([*args, "--instance", "line1"], env=env)
    assert again.returncode == 0, again.stderr
    assert (stage / "etc/inspector/line1.toml").read_text() == "# edited\n"


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--instance", "line 1"], "--instance 'line 1'"),
        (["--venv", "relative/venv"], "--venv 'relative/venv' must be an absolute path"),
        (["--bogus"], "unknown option '--bogus'"),
    ],
)
def test_install_script_rejects_bad_options_naming_them(
    tmp_path: Path, option: list[str], message: str
) -> None:
    env = {**os.environ, "DESTDIR": str(tmp_path)}
    result = run_tool(["bash", str(DEPLOY / "install.sh"), "--no-python", *option], env=env)
    assert result.returncode != 0
    assert message in result.stderr
    assert not (tmp_path / "etc").exists()


def test_promtool_accepts_prometheus_config_and_rules() -> None:
    promtool = require("promtool", "prometheus")
    config = run_tool([promtool, "check", "config", str(PROMETHEUS_YML)])
    assert config.returncode == 0, config.stdout + config.stderr
    rules = run_tool([promtool, "check", "rules", str(ALERTS)])
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "SUCCESS" in rules.stdout


def alert(name: str, severity: str, **labels: str) -> dict[str, Any]:
    """An expected ``ALERTS{alertstate="firing"}`` sample."""
    all_labels = {
        "alertname": name,
        "alertstate": "firing",
        "severity": severity,
        "job": "inspector",
        **labels,
    }
    body = ", ".join(f'{k}="{v}"' for k, v in sorted(all_labels.items()))
    return {"labels": f"ALERTS{{{body}}}", "value": 1}


def series(metric: str, instance: str, values_text: str, **labels: str) -> dict[str, str]:
    """A promtool input series with job="inspector" and the instance."""
    all_labels = {"job": "inspector", "instance": instance, **labels}
    body = ", ".join(f'{k}="{v}"' for k, v in all_labels.items())
    return {"series": f"{metric}{{{body}}}", "values": values_text}


def healthy(instance: str, camera: str) -> list[dict[str, str]]:
    """Series of a daemon with nothing wrong (15 s samples): every alert must stay quiet for it."""
    bucket = "inspector_end_to_end_latency_seconds_bucket"
    return [
        series("up", instance, "1x110"),
        series("inspector_ready", instance, "1x110"),
        series("inspector_start_time_seconds", instance, "100x110"),
        series("inspector_worker_last_progress_timestamp_seconds", instance, "0+15x110"),
        series("inspector_camera_up", instance, "1x110", camera=camera),
        series("inspector_camera_reconnects_total", instance, "0x110", camera=camera),
        series("inspector_frames_captured_total", instance, "0+10x110", camera=camera),
        series("inspector_frames_dropped_total", instance, "0x110", camera=camera, reason="stale"),
        series("inspector_verdicts_total", instance, "0+10x110", camera=camera, verdict="PASS"),
        series("inspector_verdicts_total", instance, "0x110", camera=camera, verdict="FAIL"),
        *(series(bucket, instance, "0+10x110", camera=camera, le=le) for le in ("0.1", "0.5", "1", "+Inf")),
        series("inspector_pass_score_drift_ratio", instance, "1x110", camera=camera),
    ]


def alert_scenarios() -> list[dict[str, Any]]:
    """promtool rule tests: which alerts fire, with exactly which labels, for each kind of trouble."""
    bucket = "inspector_end_to_end_latency_seconds_bucket"
    line = "line:9108"
    slow = "slow:9108"
    broken = [
        series("up", "dead:9108", "0x110"),
        series("inspector_start_time_seconds", "flappy:9108", "100x10 400x10 700x60"),
        series("inspector_ready", "stuck:9108", "0x110"),
        series("up", line, "1x110"),
        series("inspector_ready", line, "1x110"),
        series("inspector_camera_up", line, "1x10 0x100", camera="cam1"),
        series("inspector_camera_up", line, "1x110", camera="cam2"),
        series("inspector_camera_reconnects_total", line, "0x10 1+1x100", camera="cam1"),
        series("inspector_camera_reconnects_total", line, "0x110", camera="cam2"),
        series("inspector_frames_captured_total", line, "0+10x110", camera="cam2"),
        series("inspector_frames_dropped_total", line, "0+2x110", camera="cam2", reason="queue_full"),
        series("inspector_verdicts_total", line, "0x110", camera="cam2", verdict="PASS"),
        series("inspector_worker_last_progress_timestamp_seconds", line, "0x110"),
        series("inspector_ready", slow, "1x110"),
        series("inspector_frames_captured_total", slow, "0+10x110", camera="cam3"),
        series("inspector_worker_last_progress_timestamp_seconds", slow, "0+15x110"),
        series("inspector_verdicts_total", slow, "0+9x110", camera="cam3", verdict="PASS"),
        series("inspector_verdicts_total", slow, "0+1x110", camera="cam3", verdict="TIMEOUT"),
        series(bucket, slow, "0x110", camera="cam3", le="0.5"),
        *(series(bucket, slow, "0+10x110", camera="cam3", le=le) for le in ("1", "+Inf")),
        *healthy("ok:9108", "cam4"),
    ]
    firing_at_20m = [
        alert("InspectorDown", "critical", instance="dead:9108"),
        alert("InspectorRestarting", "warning", instance="flappy:9108"),
        alert("InspectorNotReady", "warning", instance="stuck:9108"),
        alert("InspectorCameraDown", "critical", instance=line, camera="cam1"),
        alert("InspectorCameraFlapping", "warning", instance=line, camera="cam1"),
        alert("InspectorNoVerdicts", "critical", instance=line),
        alert("InspectorWorkerStalled", "critical", instance=line),
        alert("InspectorFramesDropped", "warning", instance=line, camera="cam2"),
        alert("InspectorErrorVerdicts", "warning", instance=slow, camera="cam3", verdict="TIMEOUT"),
        alert("InspectorLatencyHigh", "warning", instance=slow, camera="cam3"),
    ]
    drift = "drift:9108"
    fail_rate = [  # one-minute samples: 1 % FAIL for 90 minutes, then 23 %, next to a camera that stays at 1 %
        series("inspector_verdicts_total", drift, "0+100x200", camera="cam5", verdict="PASS"),
        series("inspector_verdicts_total", drift, "0+1x89 120+30x110", camera="cam5", verdict="FAIL"),
        series("inspector_verdicts_total", drift, "0+100x200", camera="cam6", verdict="PASS"),
        series("inspector_verdicts_total", drift, "0+1x200", camera="cam6", verdict="FAIL"),
        # PASS scores at the calibration median for 100 minutes, then 1.6 times it; cam6 stays at 1.05.
        series("inspector_pass_score_drift_ratio", drift, "1x100 1.6x100", camera="cam5"),
        series("inspector_pass_score_drift_ratio", drift, "1.05x200", camera="cam6"),
    ]
    firing = {"expr": 'ALERTS{alertstate="firing"}'}
    return [
        {"interval": "15s", "input_series": broken, "promql_expr_test": [
            {**firing, "eval_time": "20m", "exp_samples": firing_at_20m},
            {**firing, "eval_time": "30s", "exp_samples": []},  # nothing fires before its "for" has passed
        ]},
        {"interval": "1m", "input_series": fail_rate, "promql_expr_test": [
            {**firing, "eval_time": "85m", "exp_samples": []},
            {**firing, "eval_time": "150m",
             "exp_samples": [alert("InspectorFailRateHigh", "warning", instance=drift, camera="cam5"),
                             alert("InspectorScoreDrift", "warning", instance=drift, camera="cam5")]},
        ]},
    ]  # fmt: skip


def test_alerts_fire_for_their_trouble_and_stay_quiet_on_a_healthy_daemon(tmp_path: Path) -> None:
    promtool = require("promtool", "prometheus")
    tests = {"rule_files": [str(ALERTS)], "evaluation_interval": "15s", "tests": alert_scenarios()}
    test_file = tmp_path / "alerts_test.yml"
    test_file.write_text(yaml.safe_dump(tests, sort_keys=False), encoding="utf-8")
    result = run_tool([promtool, "test", "rules", str(test_file)])
    assert result.returncode == 0, result.stdout + result.stderr
    rules = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    names = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    tested = {re.search(r'alertname="(\w+)"', s["labels"]).group(1)  # type: ignore[union-attr]
              for t in alert_scenarios() for e in t["promql_expr_test"] for s in e["exp_samples"]}  # fmt: skip
    assert names == tested, f"alerts without a firing scenario: {sorted(names - tested)}"


INTEGRATION_GUIDE = REPO_ROOT / "docs" / "integration.md"
SUBSCRIBER_DEADLINE_S = 10.0
SILENCE_ALARM_WAIT_S = 6.0  # the examples alarm after 3 s without any message
PROBE_INTERVAL_S = 0.05


def guide_code(section: str, language: str) -> str:
    """The first ``language`` code block of the integration guide's section whose heading contains ``section``."""
    text = INTEGRATION_GUIDE.read_text(encoding="utf-8")
    match = re.search(
        rf"^## [^\n]*{re.escape(section)}.*?^```{language}\n(.*?)^```", text, re.DOTALL | re.MULTILINE
    )
    assert match, f"docs/integration.md: no {language} block in section {section!r}"
    return match.group(1)


def build_python_example(folder: Path) -> list[str]:
    """The guide's Python subscriber as a command (endpoint appended by the caller)."""
    script = folder / "subscriber.py"
    script.write_text(guide_code("A Python subscriber", "python"), encoding="utf-8")
    return [sys.executable, str(script)]


def build_c_example(folder: Path) -> list[str]:
    """The guide's C subscriber, compiled with the build line the guide gives (skips without a toolchain)."""
    compiler = require("cc", "gcc")
    pkg_config = require("pkg-config", "pkg-config")
    flags = run_tool([pkg_config, "--cflags", "--libs", "libzmq", "libcjson"])
    if flags.returncode != 0:
        pytest.skip(
            f"libzmq/cJSON headers missing: apt-get install -y libzmq3-dev libcjson-dev ({flags.stderr})"
        )
    source = folder / "subscriber.c"
    source.write_text(guide_code("in C with libzmq", "c"), encoding="utf-8")
    binary = folder / "subscriber"
    cmd = [compiler, "-std=c11", "-Wall", "-Wextra", "-Werror", str(source), "-o", str(binary)]
    built = run_tool([*cmd, *flags.stdout.split()])
    assert built.returncode == 0, built.stderr
    return [str(binary)]


def outcome(camera: str, seq: int, verdict: Verdict) -> Outcome:
    """A verdict as the daemon would publish it (PASS/FAIL scored, TIMEOUT/ERROR with a reason)."""
    return bus_outcome(
        Frame(camera, seq, 0.0, 0.0, np.zeros((2, 2, 3), np.uint8), part_id=f"p{seq}"), verdict
    )


def next_line(lines: queue.Queue[str], deadline_s: float, what: str) -> str:
    """The next output line within ``deadline_s``."""
    try:
        return lines.get(timeout=deadline_s)
    except queue.Empty:
        raise AssertionError(f"example printed no {what} within {deadline_s} s") from None


def wait_for_subscription(pub: Publisher, lines: queue.Queue[str]) -> None:
    """Publish heartbeats and "probe" verdicts until the example prints a probe line (slow joiner)."""
    deadline = time.monotonic() + SUBSCRIBER_DEADLINE_S
    seq = 0
    while time.monotonic() < deadline:
        beat = Heartbeat(
            boot_id=pub.boot_id,
            published_at=rfc3339(0.0),
            state="ready",
            uptime_s=1.0,
            frames_published=seq,
            worker_alive=True,
        )
        pub.publish_heartbeat(beat)
        pub.publish(outcome("probe", seq, "PASS"))
        seq += 1
        try:
            if lines.get(timeout=PROBE_INTERVAL_S).startswith("probe"):
                return
        except queue.Empty:
            continue
    raise AssertionError(f"example received nothing within {SUBSCRIBER_DEADLINE_S} s")


def pump_lines(stream: Any, lines: queue.Queue[str]) -> None:
    """Copy a text stream into a queue, line by line."""
    for line in stream:
        lines.put(line.rstrip())


def run_example(
    command: list[str], context: zmq.Context[zmq.Socket[bytes]], lines: queue.Queue[str]
) -> tuple[list[str], str]:
    """Run the example against a real publisher; its verdict lines for the test verdicts and its silence alarm."""
    with Publisher(BusConfig(bind="tcp://127.0.0.1:*", linger_ms=0), context, new_boot_id()) as pub:
        proc = subprocess.Popen([*command, pub.endpoint], stdout=subprocess.PIPE, text=True)
        reader = threading.Thread(target=pump_lines, args=(proc.stdout, lines), daemon=True)
        reader.start()
        try:
            wait_for_subscription(pub, lines)
            verdicts: list[tuple[int, Verdict]] = [(0, "PASS"), (1, "FAIL"), (3, "TIMEOUT"), (4, "ERROR")]
            for seq, verdict in verdicts:
                pub.publish(outcome("cam1", seq, verdict))
            got: list[str] = []
            while len(got) < 5:
                line = next_line(lines, SUBSCRIBER_DEADLINE_S, "verdict line")
                if not line.startswith(("probe", "daemon")):
                    got.append(line)
            return got, next_line(lines, SILENCE_ALARM_WAIT_S, "silence alarm")
        finally:
            proc.kill()
            proc.wait(TOOL_TIMEOUT_S)
            reader.join(TOOL_TIMEOUT_S)
            if proc.stdout is not None:
                proc.stdout.close()


@pytest.mark.parametrize("build", [build_python_example, build_c_example], ids=["python", "c"])
def test_integration_guide_subscriber_accepts_only_pass_and_reports_gaps_and_silence(
    tmp_path: Path, build: Callable[[Path], list[str]]
) -> None:
    command = build(tmp_path)
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    lines: queue.Queue[str] = queue.Queue(maxsize=10_000)
    try:
        got, alarm = run_example(command, context, lines)
    finally:
        context.destroy(linger=0)
    assert got[0] == "cam1 0 p0 PASS ACCEPT"
    assert got[1] == "cam1 1 p1 FAIL REJECT"
    assert got[2] == "GAP cam1 1 frames without verdict: REJECT"
    assert got[3].startswith("cam1 3 p3 TIMEOUT REJECT")
    assert got[4].startswith("cam1 4 p4 ERROR REJECT")
    assert alarm.startswith("ALARM")


def build_curve_python_example(folder: Path) -> list[str]:
    """The guide's CURVE subscriber in Python (endpoint and key files appended by the caller)."""
    script = folder / "curve_subscriber.py"
    script.write_text(guide_code("Security", "python"), encoding="utf-8")
    return [sys.executable, str(script)]


def build_curve_c_example(folder: Path) -> list[str]:
    """The guide's CURVE subscriber in C, built with the guide's line (skips without a toolchain)."""
    compiler = require("cc", "gcc")
    pkg_config = require("pkg-config", "pkg-config")
    flags = run_tool([pkg_config, "--cflags", "--libs", "libzmq"])
    if flags.returncode != 0:
        pytest.skip(f"libzmq headers missing: apt-get install -y libzmq3-dev ({flags.stderr})")
    source = folder / "curve_subscriber.c"
    source.write_text(guide_code("Security", "c"), encoding="utf-8")
    binary = folder / "curve_subscriber"
    cmd = [compiler, "-std=c11", "-Wall", "-Wextra", "-Werror", str(source), "-o", str(binary)]
    built = run_tool([*cmd, *flags.stdout.split()])
    assert built.returncode == 0, built.stderr
    return [str(binary)]


@pytest.mark.parametrize("build", [build_curve_python_example, build_curve_c_example], ids=["python", "c"])
def test_integration_guide_curve_subscriber_receives_only_with_an_allowed_key(
    tmp_path: Path, build: Callable[[Path], list[str]]
) -> None:
    from inspector.bus.curve import CurveAuthenticator, generate_curve_keypair, load_curve_server

    command = build(tmp_path)
    server_secret, server_public, _ = generate_curve_keypair(tmp_path / "server")
    client_secret, client_public, _ = generate_curve_keypair(tmp_path / "client")
    stranger_secret, _, _ = generate_curve_keypair(tmp_path / "stranger")
    server = load_curve_server(server_secret, [client_public])
    assert server is not None
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    auth = CurveAuthenticator(context, server)
    auth.start()
    procs: list[subprocess.Popen[str]] = []
    readers: list[threading.Thread] = []
    try:
        config = BusConfig(bind="tcp://127.0.0.1:*", linger_ms=0)
        with Publisher(config, context, new_boot_id(), curve=server) as pub:
            queues: dict[str, queue.Queue[str]] = {}
            for name, secret in (("allowed", client_secret), ("stranger", stranger_secret)):
                proc = subprocess.Popen(
                    [*command, pub.endpoint, str(secret), str(server_public)],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                procs.append(proc)
                queues[name] = queue.Queue()
                readers.append(
                    threading.Thread(target=pump_lines, args=(proc.stdout, queues[name]), daemon=True)
                )
                readers[-1].start()
            deadline, seq, line = time.monotonic() + SUBSCRIBER_DEADLINE_S, 0, ""
            while not line and time.monotonic() < deadline:
                pub.publish(outcome("cam1", seq, "PASS"))
                seq += 1
                try:
                    line = queues["allowed"].get(timeout=PROBE_INTERVAL_S)
                except queue.Empty:
                    continue
            assert "cam1" in line and "PASS" in line, f"allowed example printed {line!r}"
            for i in range(
                5
            ):  # the stranger has had every chance: it connected before the allowed one got one
                pub.publish(outcome("cam1", seq + i, "PASS"))
            assert queues["stranger"].empty() and procs[1].poll() is None
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        for reader in readers:
            reader.join(SUBSCRIBER_DEADLINE_S)  # EOF once the process is gone
        for proc in procs:
            if proc.stdout is not None:
                proc.stdout.close()
        auth.stop()
        context.destroy(linger=0)

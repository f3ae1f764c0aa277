"""The MQTT output of the real daemon against a real mosquitto: every verdict with the bus's seq and bytes,
availability retained and its last will, commands through the line commands, a broker killed and restarted
while the bus goes on, and a wrong password that never stops inspection."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from inspector.bus.wire import VerdictHeader
from inspector.demo.data import write_demo_video
from tests.mosquitto import Broker, Recorder, missing_reason, retained, running_broker
from tests.processes import DaemonProcess, Subscriber
from tests.support import REPO_ROOT, SyntheticGallery, decode_image, free_port, metric, scrape, wait_until
from tests.toml_config import TomlValue, tcp, video_camera, write_daemon_config

pytestmark = pytest.mark.skipif(missing_reason() is not None, reason=missing_reason() or "")

PREFIX = "inspector/line3"
LINE, GATE = "line", "gate"
FPS = 5.0
USERS = {"inspector": "daemon-secret", "plc": "plc-secret", "dashboard": "dashboard-secret"}
DOCS = REPO_ROOT / "docs" / "mqtt.md"
ACL_MARK = "# /etc/mosquitto/inspector.acl\n"


def documented_acl() -> str:
    """The example ACL of docs/mqtt.md, exactly (the daemon runs against it here)."""
    text = DOCS.read_text(encoding="utf-8")
    start = text.index(ACL_MARK)
    return text[start : text.index("```", start)]


@dataclass
class Plant:
    """A broker, a daemon publishing to it, a recorder on the broker (as dashboard) and one on the bus."""

    broker: Broker
    daemon: DaemonProcess
    mqtt: Recorder
    bus: Subscriber
    metrics_port: int

    def verdicts(self, camera: str) -> list[bytes]:
        return [m.payload for m in self.mqtt.on(f"{PREFIX}/{camera}/verdict")]

    def seqs(self, camera: str) -> list[int]:
        return [json.loads(payload)["seq"] for payload in self.verdicts(camera)]

    def retained(self, topic: str) -> bytes:
        return retained(self.broker.port, f"{PREFIX}/{topic}", "dashboard", USERS["dashboard"]).payload


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """mosquitto with logins and the ACL of docs/mqtt.md (the daemon, a PLC that may command, a dashboard that
    may only read)."""
    yield from running_broker(Broker(tmp_path / "broker", users=USERS, acl=documented_acl()))


@pytest.fixture
def plant(tmp_path: Path, synthetic_gallery: SyntheticGallery, broker: Broker) -> Iterator[Any]:
    """Factory: start the daemon with ``[mqtt]`` fields over a login as ``daemon``; all stopped at the end."""
    started: list[Plant] = []

    def start(password: str = USERS["inspector"], **mqtt: TomlValue) -> Plant:
        video = tmp_path / "line.avi"
        write_demo_video(video, 24, FPS, 4, 160, seed=11)
        secret = tmp_path / "mqtt-password"
        secret.write_text(password + "\n")
        secret.chmod(0o600)
        ports = {name: free_port() for name in ("bus", "metrics", "triggers")}
        gallery = synthetic_gallery.path
        config = write_daemon_config(
            tmp_path / "mqtt.toml",
            products=[{"name": "flange_a", "gallery": gallery}, {"name": "flange_b", "gallery": gallery}],
            cameras=[video_camera(LINE, video, FPS, product="flange_a"),
                     video_camera(GATE, video, FPS, product="flange_a", trigger="external")],
            bus={"bind": tcp(ports["bus"])}, triggers={"bind": tcp(ports["triggers"])},
            metrics={"port": ports["metrics"]},
            mqtt={"enabled": True, "port": broker.port, "username": "inspector", "password_file": secret,
                  "topic_prefix": PREFIX, "reconnect_max_s": 2, **mqtt},
        )  # fmt: skip
        mqtt_recorder = Recorder(broker.port, [f"{PREFIX}/#"], "dashboard", USERS["dashboard"])
        wait_until(lambda: mqtt_recorder.connections > 0, "the MQTT recorder connected")
        bus = Subscriber(tcp(ports["bus"]))
        started.append(Plant(broker, DaemonProcess(config), mqtt_recorder, bus, ports["metrics"]))
        started[-1].daemon.wait_event("daemon_ready")
        return started[-1]

    try:
        yield start
    finally:
        for p in started:
            p.mqtt.close()
            p.bus.close()
            p.daemon.close()


def _answer(plc: Recorder, request_id: str) -> dict[str, Any]:
    topic = f"{PREFIX}/{GATE}/answer"
    wait_until(
        lambda: any(json.loads(m.payload).get("request_id") == request_id for m in plc.on(topic)), request_id
    )
    return next(a for m in plc.on(topic) if (a := json.loads(m.payload)).get("request_id") == request_id)


def _command(plc: Recorder, cmd: str, doc: dict[str, Any]) -> None:
    plc.publish(f"{PREFIX}/{GATE}/command/{cmd}", json.dumps(doc).encode())


def test_every_verdict_is_published_with_the_bus_seq_online_retained_and_commands_reach_the_line(
    plant: Any, broker: Broker
) -> None:
    p: Plant = plant(commands_enabled=True, snapshot_max_fps=1.0)
    wait_until(lambda: len(p.verdicts(LINE)) >= 8, "verdicts on the MQTT verdict topic")
    assert p.retained("availability") == b"online"
    wait_until(
        lambda: json.loads(p.retained(f"{LINE}/state"))["ready"], "the camera ready in its retained state"
    )
    plc = Recorder(broker.port, [f"{PREFIX}/{GATE}/answer"], "plc", USERS["plc"])
    wait_until(lambda: plc.connections > 0, "the PLC connected")
    wait_until(lambda: p.daemon.event("mqtt_connected") is not None, "the daemon connected")
    _command(plc, "trigger", {"part_id": "G-1", "request_id": "q1"})
    first = _answer(plc, "q1")
    assert (first["ok"], first["seq"], first["part_id"], first["cmd"]) == (True, 0, "G-1", "trigger"), first
    _command(plc, "product", {"product": "flange_b", "request_id": "q2"})
    assert _answer(plc, "q2") | {"request_id": None} == {
        "ok": True, "camera": GATE, "product": "flange_b", "previous": "flange_a", "cmd": "product",
        "request_id": None,
    }  # fmt: skip
    wait_until(lambda: json.loads(p.retained(f"{GATE}/state"))["product"] == "flange_b", "the new product")
    viewer = Recorder(broker.port, [], "dashboard", USERS["dashboard"])
    wait_until(lambda: viewer.connections > 0, "the viewer connected")
    viewer.publish(
        f"{PREFIX}/{GATE}/command/trigger", json.dumps({"part_id": "V-1"}).encode()
    )  # ACL: dropped
    viewer.close()
    _command(plc, "trigger", {"part_id": "G-2", "request_id": "q3"})
    assert _answer(plc, "q3")["seq"] == 1
    wait_until(lambda: len(p.verdicts(GATE)) == 2, "both triggered parts on MQTT")
    gate = [json.loads(v) for v in p.verdicts(GATE)]
    assert [(g["seq"], g["part_id"], g["product"]) for g in gate] == [
        (0, "G-1", "flange_a"),
        (1, "G-2", "flange_b"),
    ]
    plc.close()
    fails = [v for v in p.verdicts(LINE) if json.loads(v)["verdict"] in ("FAIL", "REVIEW")]
    if fails:  # the demo video's defects: their snapshots, rate bounded
        wait_until(lambda: p.mqtt.on(f"{PREFIX}/{LINE}/snapshot"), "a snapshot")
        assert decode_image(p.mqtt.on(f"{PREFIX}/{LINE}/snapshot")[0].payload).ndim == 3
    assert p.daemon.terminate() == 0
    summary = p.daemon.wait_event("daemon_stopped")["cameras"]
    wait_until(
        lambda: len(set(p.seqs(LINE))) == summary[LINE]["published"], "every published verdict on MQTT"
    )
    assert sorted(set(p.seqs(LINE))) == list(range(summary[LINE]["published"]))
    on_bus = p.bus.got.of(LINE) + p.bus.got.of(GATE)
    assert len(on_bus) >= 8
    for header in on_bus:  # the bytes the bus sent, exactly (the header as published; no mask)
        same = [v for v in p.verdicts(header.camera) if json.loads(v)["seq"] == header.seq]
        assert same and same[0] == header.model_dump_json().encode("utf-8")
        assert VerdictHeader.model_validate_json(same[0]) == header
    assert p.retained("availability") == b"offline"
    final = json.loads(p.retained(f"{LINE}/state"))
    assert (final["ready"], final["daemon"]) == (False, "stopped")


@pytest.mark.faults
def test_a_broker_killed_and_restarted_is_reconnected_while_the_bus_goes_on_and_sigkill_leaves_the_last_will(
    plant: Any, broker: Broker
) -> None:
    p: Plant = plant()
    wait_until(lambda: len(p.verdicts(LINE)) >= 3, "verdicts before the outage")
    broker.stop(signal.SIGKILL)
    last_before = max(p.seqs(LINE))
    published = p.bus.got.count()
    wait_until(lambda: p.daemon.event("mqtt_disconnected") is not None, "the loss logged")
    wait_until(lambda: p.daemon.event("mqtt_connect_failed") is not None, "a failed reconnect logged")
    wait_until(lambda: p.bus.got.count() >= published + 10, "the bus publishing during the outage")
    assert metric(scrape(p.metrics_port), "inspector_mqtt_connected") == 0
    broker.start()
    wait_until(lambda: p.retained("availability") == b"online", "online again on the restarted broker")
    wait_until(lambda: any(s > last_before + 10 for s in p.seqs(LINE)), "verdicts flowing again")
    samples = scrape(p.metrics_port)
    assert metric(samples, "inspector_mqtt_connected") == 1
    assert metric(samples, "inspector_mqtt_connect_failures_total", reason="network") >= 1
    seqs = [v.seq for v in p.bus.got.of(LINE)]
    assert seqs == list(range(seqs[0], seqs[-1] + 1)), "the bus lost nothing during the outage"
    states = p.bus.got.states
    assert "degraded" not in states[states.index("ready") :], "the daemon stayed ready"
    p.daemon.proc.send_signal(signal.SIGKILL)
    p.daemon.proc.wait()
    wait_until(lambda: p.retained("availability") == b"offline", "the last will, retained")
    assert "Traceback" not in "".join(p.daemon.raw)


@pytest.mark.faults
def test_a_wrong_password_is_logged_once_per_attempt_and_the_daemon_stays_ready(plant: Any) -> None:
    p: Plant = plant(password="not-the-password")
    wait_until(lambda: len(p.daemon.events("mqtt_connect_failed")) >= 2, "two refused attempts")
    published = p.bus.got.count()
    wait_until(lambda: p.bus.got.count() >= published + 5, "verdicts on the bus")
    assert p.bus.got.states[-1] == "ready"
    attempts = p.daemon.events("mqtt_connect_failed")
    assert all(a["kind"] == "refused" and "Not authorized" in a["reason"] for a in attempts), attempts
    refused = metric(scrape(p.metrics_port), "inspector_mqtt_connect_failures_total", reason="refused")
    assert refused >= len(attempts) >= 2
    assert p.daemon.terminate() == 0
    assert "Traceback" not in "".join(p.daemon.raw)
    assert p.verdicts(LINE) == []

"""Tests for inspector.outputs.mqtt against a real mosquitto on a loopback port: verdicts as the bus sent them,
retained state and availability, a broker that is down, wrong passwords, TLS, snapshots and commands."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from inspector.bus.wire import CameraStatus, DaemonState, Heartbeat, rfc3339
from inspector.config.mqtt import MqttConfig
from inspector.core.names import Verdict
from inspector.core.records import Frame, Outcome
from inspector.ops.output_metrics import OutputMetrics
from inspector.outputs.mqtt import MqttSink
from tests.mosquitto import (
    Broker,
    CertificateAuthority,
    Recorder,
    make_ca,
    missing_reason,
    retained,
    running_broker,
)
from tests.support import bus_outcome, decode_image, stamp_published, wait_until

pytestmark = pytest.mark.skipif(missing_reason() is not None, reason=missing_reason() or "")

CAMERA = "cam1"
PREFIX = "plant/line3"
BOOT = "b" * 32
USERS = {"daemon": "daemon-secret", "plc": "plc-secret", "viewer": "viewer-secret"}
ACL = f"""user daemon
topic write {PREFIX}/#
topic read {PREFIX}/+/command/#
user plc
topic write {PREFIX}/+/command/#
topic read {PREFIX}/#
user viewer
topic read {PREFIX}/#
"""
FRAME = np.full((48, 64, 3), 90, np.uint8)


@dataclass
class Line:
    """The daemon's side the sink reads: its heartbeat and each camera's product, changeable by a test."""

    state: DaemonState = "ready"
    camera_up: bool = True
    product: str = "flange_a"
    commands: list[dict[str, Any]] = field(default_factory=list)

    def heartbeat(self) -> Heartbeat:
        camera = CameraStatus(state="up" if self.camera_up else "down", up=self.camera_up, frames=1)
        return Heartbeat(boot_id=BOOT, published_at=rfc3339(time.time()), state=self.state, uptime_s=1.0,
                         cameras={CAMERA: camera}, frames_published=0, worker_alive=True)  # fmt: skip

    def handle(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Stands in for LineCommands.handle (the process tests use the real one)."""
        self.commands.append(doc)
        return {"ok": True, "camera": doc["camera"], "seq": len(self.commands) - 1}


def outcome(seq: int, verdict: Verdict = "PASS") -> Outcome:
    """A published outcome of ``CAMERA`` (stamped with the bus's own header code)."""
    score = {"PASS": 1.0, "REVIEW": 1.8, "FAIL": 3.0}.get(verdict)
    scored: dict[str, Any] = {"error": "x"}
    if score is not None:
        scored = {"score": score, "threshold": 2.0, "review_threshold": 1.5}
    frame = Frame(CAMERA, seq, time.time(), time.monotonic(), FRAME, part_id=f"P-{seq}")
    return stamp_published(bus_outcome(frame, verdict, **scored), BOOT, time.time())


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """mosquitto with logins (no anonymous clients) and an ACL; stopped by PID."""
    yield from running_broker(Broker(tmp_path / "broker", users=USERS, acl=ACL))


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., tuple[MqttSink, CollectorRegistry]]]:
    """Factory: a started sink of ``Line`` on a config (fields over a login as ``daemon``); closed at the end."""
    sinks: list[MqttSink] = []
    password = tmp_path / "mqtt-password"

    def build(
        line: Line, port: int, secret: str = USERS["daemon"], **fields: Any
    ) -> tuple[MqttSink, CollectorRegistry]:
        clock = fields.pop("_clock", time.monotonic)
        password.write_text(secret + "\n")
        password.chmod(0o600)
        config = MqttConfig.model_validate({"enabled": True, "port": port, "username": "daemon",
                                            "password_file": password, "topic_prefix": PREFIX, **fields})  # fmt: skip
        registry = CollectorRegistry()
        sink = MqttSink(config, [CAMERA], line.heartbeat, lambda _c: line.product, OutputMetrics(registry),
                        monotonic=clock)  # fmt: skip
        sink.attach_commands(line.handle)
        sink.start()
        sinks.append(sink)
        return sink, registry

    try:
        yield build
    finally:
        for sink in sinks:
            sink.close()


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def recorder(broker: Broker, user: str = "viewer") -> Recorder:
    got = Recorder(broker.port, [f"{PREFIX}/#"], user, USERS[user])
    wait_until(lambda: got.connections > 0, "the test subscriber connected")
    return got


def test_every_verdict_is_published_as_the_bus_sent_it_with_online_and_the_state_retained(
    broker: Broker, make: Callable[..., tuple[MqttSink, CollectorRegistry]]
) -> None:
    line = Line()
    watch = recorder(broker)
    sink, registry = make(line, broker.port)
    wait_until(lambda: sink.connection.connected.is_set(), "connected")
    sent = [outcome(seq, "FAIL" if seq % 7 == 3 else "PASS") for seq in range(30)]
    for item in sent:
        sink.deliver(item)
    topic = f"{PREFIX}/{CAMERA}/verdict"
    wait_until(lambda: len(watch.on(topic)) == len(sent), "every verdict on the verdict topic")
    assert [m.payload for m in watch.on(topic)] == [o.published.encode() for o in sent if o.published]
    assert [json.loads(m.payload)["seq"] for m in watch.on(topic)] == list(range(30))
    assert sample(registry, "inspector_mqtt_published_total", kind="verdict") == 30
    assert sample(registry, "inspector_sink_dropped_total", sink="mqtt", reason="queue_full") == 0
    assert sample(registry, "inspector_mqtt_connected") == 1
    assert retained(broker.port, f"{PREFIX}/availability", "viewer", USERS["viewer"]).payload == b"online"
    state = json.loads(retained(broker.port, f"{PREFIX}/{CAMERA}/state", "viewer", USERS["viewer"]).payload)
    assert state | {"published_at": None} == {
        "camera": CAMERA, "ready": True, "up": True, "state": "up", "product": "flange_a", "daemon": "ready",
        "boot_id": BOOT, "published_at": None,
    }  # fmt: skip
    assert not watch.on(f"{PREFIX}/{CAMERA}/snapshot"), "snapshots are off by default"
    watch.close()


def test_state_follows_the_camera_and_the_product_and_a_clean_stop_leaves_offline_and_not_ready(
    broker: Broker, make: Callable[..., tuple[MqttSink, CollectorRegistry]]
) -> None:
    line = Line()
    watch = recorder(broker)
    sink, _ = make(line, broker.port)
    state_topic = f"{PREFIX}/{CAMERA}/state"

    def last_state() -> dict[str, Any]:
        got = watch.last(state_topic)
        return json.loads(got.payload) if got else {}

    wait_until(lambda: last_state().get("ready") is True, "ready")
    line.camera_up = False
    wait_until(lambda: last_state().get("ready") is False and last_state()["state"] == "down", "camera down")
    line.camera_up, line.product = True, "flange_b"
    wait_until(lambda: last_state().get("product") == "flange_b" and last_state()["ready"], "changeover")
    published = len(watch.on(state_topic))
    sink.close()
    assert retained(broker.port, f"{PREFIX}/availability", "viewer", USERS["viewer"]).payload == b"offline"
    final = json.loads(retained(broker.port, state_topic, "viewer", USERS["viewer"]).payload)
    assert (final["ready"], final["daemon"], final["product"]) == (False, "stopped", "flange_b")
    assert published == 3, "a state message only when something changed"
    watch.close()


def test_while_the_broker_is_down_verdicts_wait_up_to_queue_size_the_rest_are_dropped_and_counted(
    broker: Broker, make: Callable[..., tuple[MqttSink, CollectorRegistry]]
) -> None:
    broker.stop()
    with capture_logs() as logs:
        sink, registry = make(Line(), broker.port, queue_size=10, reconnect_max_s=1)

        def failures() -> float:
            return sample(registry, "inspector_mqtt_connect_failures_total", reason="network")

        wait_until(lambda: failures() >= 2, "two failed attempts")
        for seq in range(15):
            sink.deliver(outcome(seq))  # never blocks
        assert sink.depth == 10
        assert sample(registry, "inspector_sink_dropped_total", sink="mqtt", reason="queue_full") == 5
        broker.start()
        watch = recorder(broker)
        wait_until(lambda: sink.connection.connected.is_set(), "reconnected")
        wait_until(lambda: sink.depth == 0 and sink.connection.outstanding == 0, "the queue sent")
        sink.close()
    attempts = [e for e in logs if e["event"] == "mqtt_connect_failed"]
    assert len(attempts) == failures() >= 2, "one line per failed attempt"
    assert all(e["kind"] == "network" and "Connection refused" in e["reason"] for e in attempts)
    assert not any("exc_info" in e or "exception" in e for e in logs)
    assert sample(registry, "inspector_mqtt_published_total", kind="verdict") == 10
    watch.close()


def test_a_wrong_password_is_refused_and_logged_once_per_attempt_with_the_reason(
    broker: Broker, make: Callable[..., tuple[MqttSink, CollectorRegistry]]
) -> None:
    with capture_logs() as logs:
        sink, registry = make(Line(), broker.port, secret="not-the-password", reconnect_max_s=1)

        def refused() -> float:
            return sample(registry, "inspector_mqtt_connect_failures_total", reason="refused")

        wait_until(lambda: refused() >= 2, "two refused attempts")
        sink.deliver(outcome(0))
        sink.close()
        count = refused()
    attempts = [e for e in logs if e["event"] == "mqtt_connect_failed"]
    assert len(attempts) == count, "one line per attempt, not one per callback"
    assert all(e["kind"] == "refused" and "Not authorized" in e["reason"] for e in attempts), attempts
    assert not any("exc_info" in e or "exception" in e for e in logs)
    assert sample(registry, "inspector_mqtt_connected") == 0
    assert sample(registry, "inspector_sink_dropped_total", sink="mqtt", reason="shutdown") == 1


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[Broker, CertificateAuthority]]:
    """mosquitto with a TLS listener (certificates from a test CA made by openssl) that requires a client
    certificate, beside a plain listener for the test's subscriber."""
    ca = make_ca(tmp_path / "ca")
    started = Broker(tmp_path / "broker", users=USERS, acl=ACL, ca=ca, require_certificate=True)
    started.start()
    try:
        yield started, ca
    finally:
        started.stop()


def test_tls_with_a_test_ca_and_a_client_certificate_carries_the_verdicts(
    tls_broker: tuple[Broker, CertificateAuthority], make: Callable[..., tuple[MqttSink, CollectorRegistry]]
) -> None:
    broker, ca = tls_broker
    watch = recorder(broker)
    sink, _ = make(Line(), broker.tls_port, tls=True, tls_ca_file=ca.ca, tls_certificate=ca.cert("client"),
                   tls_private_key=ca.key("client"))  # fmt: skip
    wait_until(lambda: sink.connection.connected.is_set(), "connected over TLS")
    sink.deliver(outcome(0))
    wait_until(lambda: watch.on(f"{PREFIX}/{CAMERA}/verdict"), "the verdict over TLS")
    assert "New client connected" in broker.log()
    watch.close()


def test_a_tls_failure_is_logged_once_per_attempt_with_the_reason(
    tls_broker: tuple[Broker, CertificateAuthority],
    make: Callable[..., tuple[MqttSink, CollectorRegistry]],
    tmp_path: Path,
) -> None:
    broker, ca = tls_broker
    other = make_ca(tmp_path / "other", name="other")
    with capture_logs() as logs:
        untrusted, registry = make(Line(), broker.tls_port, tls=True, tls_ca_file=other.ca,
                                   tls_certificate=ca.cert("client"), tls_private_key=ca.key("client"),
                                   reconnect_max_s=1)  # fmt: skip
        wait_until(
            lambda: sample(registry, "inspector_mqtt_connect_failures_total", reason="tls") >= 2, "refusals"
        )
        untrusted.close()
        no_certificate, registry = make(
            Line(), broker.tls_port, tls=True, tls_ca_file=ca.ca, reconnect_max_s=1
        )
        wait_until(
            lambda: sample(registry, "inspector_mqtt_connect_failures_total", reason="tls") >= 1, "refusal"
        )
        no_certificate.close()
    attempts = [e for e in logs if e["event"] == "mqtt_connect_failed"]
    assert all(e["kind"] == "tls" for e in attempts), attempts
    assert "certificate verify failed" in attempts[0]["reason"]
    assert "SSL" in attempts[-1]["reason"] and "certificate" in attempts[-1]["reason"]
    assert not any("exc_info" in e or "exception" in e for e in logs)


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_snapshots_are_jpegs_of_fail_and_review_parts_at_most_snapshot_max_fps(
    broker: Broker, make: Callable[..., tuple[MqttSink, CollectorRegistry]]
) -> None:
    clock = Clock()
    watch = recorder(broker)
    sink, registry = make(Line(), broker.port, snapshot_max_fps=1.0, _clock=clock)
    steps: list[tuple[float, Verdict]] = [
        (0.0, "FAIL"),
        (0.5, "FAIL"),
        (1.0, "REVIEW"),
        (2.5, "PASS"),
        (3.0, "ERROR"),
    ]
    for seq, (at, verdict) in enumerate(steps):
        clock.now = 100.0 + at
        sink.deliver(outcome(seq, verdict))
    wait_until(lambda: len(watch.on(f"{PREFIX}/{CAMERA}/verdict")) == len(steps), "every verdict")
    wait_until(lambda: len(watch.on(f"{PREFIX}/{CAMERA}/snapshot")) == 2, "two snapshots")
    images = [decode_image(m.payload) for m in watch.on(f"{PREFIX}/{CAMERA}/snapshot")]
    assert all(image.shape == FRAME.shape for image in images)
    assert sample(registry, "inspector_mqtt_snapshots_skipped_total", reason="rate") == 1
    assert sample(registry, "inspector_mqtt_published_total", kind="snapshot") == 2
    watch.close()


def _answers(watch: Recorder) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in watch.on(f"{PREFIX}/{CAMERA}/answer")]


def test_commands_reach_the_line_commands_only_from_the_user_the_broker_lets_publish_them(
    broker: Broker, make: Callable[..., tuple[MqttSink, CollectorRegistry]]
) -> None:
    line = Line()
    plc, viewer = recorder(broker, "plc"), recorder(broker, "viewer")
    sink, _registry = make(line, broker.port, commands_enabled=True)
    wait_until(lambda: sink.connection.subscribed.is_set(), "the command subscription granted")
    trigger = f"{PREFIX}/{CAMERA}/command/trigger"
    viewer.publish(trigger, json.dumps({"part_id": "V-1"}).encode())  # the ACL drops it at the broker
    plc.publish(trigger, json.dumps({"part_id": "A-1", "request_id": "r-7"}).encode())
    wait_until(lambda: any(a.get("request_id") == "r-7" for a in _answers(plc)), "the answer to r-7")
    assert line.commands == [{"part_id": "A-1", "cmd": "trigger", "camera": CAMERA}]
    answer = next(a for a in _answers(plc) if a.get("request_id") == "r-7")
    assert answer["ok"] is True and answer["cmd"] == "trigger" and answer["camera"] == CAMERA
    plc.publish(f"{PREFIX}/{CAMERA}/command/product", b"not json")
    wait_until(lambda: any(a["cmd"] == "product" for a in _answers(plc)), "the product answer")
    bad = next(a for a in _answers(plc) if a["cmd"] == "product")
    assert bad["ok"] is False and "not JSON" in bad["error"]
    plc.close()
    viewer.close()


def test_a_retained_command_is_never_acted_on_when_the_daemon_connects(
    broker: Broker, make: Callable[..., tuple[MqttSink, CollectorRegistry]]
) -> None:
    line = Line()
    plc = recorder(broker, "plc")
    trigger = f"{PREFIX}/{CAMERA}/command/trigger"
    plc.publish(
        trigger, json.dumps({"part_id": "R-1"}).encode(), retain=True
    )  # the broker replays it to new subscribers
    _sink, registry = make(line, broker.port, commands_enabled=True)
    wait_until(
        lambda: sample(registry, "inspector_mqtt_commands_total", cmd="trigger", result="ignored") == 1,
        "the retained trigger ignored",
    )
    plc.publish(trigger, json.dumps({"part_id": "A-2"}).encode())
    wait_until(lambda: line.commands, "a live trigger acted on")
    assert line.commands == [{"part_id": "A-2", "cmd": "trigger", "camera": CAMERA}]
    plc.publish(trigger, b"", retain=True)  # clears the retained message
    plc.close()


def test_commands_are_not_subscribed_unless_enabled(
    broker: Broker, make: Callable[..., tuple[MqttSink, CollectorRegistry]]
) -> None:
    line = Line()
    plc = recorder(broker, "plc")
    sink, _ = make(line, broker.port)
    wait_until(lambda: sink.connection.connected.is_set(), "connected")
    sink.deliver(outcome(0))
    plc.publish(f"{PREFIX}/{CAMERA}/command/trigger", json.dumps({"part_id": "A-1"}).encode())
    sink.deliver(outcome(1))
    wait_until(lambda: len(plc.on(f"{PREFIX}/{CAMERA}/verdict")) == 2, "both verdicts")
    assert line.commands == [] and _answers(plc) == []
    assert "plant/line3/+/command/+" not in broker.log()
    plc.close()

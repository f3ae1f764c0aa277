"""Tests for inspector.outputs.mqtt_topics: topic names under a prefix, command topics read back, camera state."""

from __future__ import annotations

import json

from inspector.bus.wire import CameraStatus, DaemonState, Heartbeat
from inspector.outputs.mqtt_topics import Topics, camera_state, state_payload, stopped_state

TOPICS = Topics("plant/line3")


def heartbeat(state: DaemonState, up: bool, worker_alive: bool = True) -> Heartbeat:
    camera = CameraStatus(state="up" if up else "down", up=up, frames=3)
    return Heartbeat(boot_id="c" * 32, published_at="2026-12-07T10:00:00.000000Z", state=state, uptime_s=2.0,
                     cameras={"cam1": camera}, frames_published=3, worker_alive=worker_alive)  # fmt: skip


def test_every_topic_lies_under_the_prefix_and_commands_are_one_level_wildcards() -> None:
    assert TOPICS.availability == "plant/line3/availability"
    assert TOPICS.verdict("cam1") == "plant/line3/cam1/verdict"
    assert TOPICS.state("cam1") == "plant/line3/cam1/state"
    assert TOPICS.snapshot("cam1") == "plant/line3/cam1/snapshot"
    assert TOPICS.answer("cam1") == "plant/line3/cam1/answer"
    assert TOPICS.commands == "plant/line3/+/command/+"


def test_a_command_topic_reads_back_as_camera_and_command_and_nothing_else_does() -> None:
    assert TOPICS.command_of("plant/line3/cam1/command/trigger") == ("cam1", "trigger")
    for other in (
        "plant/line3/cam1/verdict",
        "plant/line3/cam1/command",
        "plant/line3/cam1/command/a/b",
        "plant/line30/cam1/command/trigger",
        "plant/line3//command/trigger",
        "other/cam1/command/x",
    ):
        assert TOPICS.command_of(other) is None, other


def test_a_camera_is_ready_only_while_the_daemon_inspects_its_worker_runs_and_the_camera_is_up() -> None:
    assert camera_state(heartbeat("ready", True), "cam1", "flange_a")["ready"] is True
    assert camera_state(heartbeat("degraded", True), "cam1", "flange_a")["ready"] is True
    assert camera_state(heartbeat("degraded", False), "cam1", "flange_a")["ready"] is False
    assert camera_state(heartbeat("ready", True, worker_alive=False), "cam1", "flange_a")["ready"] is False
    for state in ("starting", "stopping"):
        assert camera_state(heartbeat(state, True), "cam1", "flange_a")["ready"] is False
    unknown = camera_state(heartbeat("ready", True), "cam9", None)
    assert (unknown["ready"], unknown["up"], unknown["state"], unknown["product"]) == (
        False,
        False,
        "starting",
        None,
    )


def test_the_state_payload_is_json_with_its_time_and_a_clean_stop_is_not_ready() -> None:
    state = camera_state(heartbeat("ready", True), "cam1", "flange_a")
    doc = json.loads(state_payload(state, "2026-12-07T10:00:01.000000Z"))
    assert doc == {**state, "published_at": "2026-12-07T10:00:01.000000Z"}
    stopped = stopped_state(state)
    assert (stopped["ready"], stopped["up"], stopped["daemon"], stopped["product"]) == (False, False, "stopped",
                                                                                       "flange_a")  # fmt: skip

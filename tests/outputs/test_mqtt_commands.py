"""Tests for inspector.outputs.mqtt_commands: commands routed to the line commands, each answered, bad ones
refused with the reason, retained ones never acted on."""

from __future__ import annotations

import json
from typing import Any

from prometheus_client import CollectorRegistry

from inspector.ops.mqtt_metrics import MqttMetrics
from inspector.outputs.mqtt_commands import MqttCommands
from inspector.outputs.mqtt_topics import Topics

TOPICS = Topics("p")


class Harness:
    """The router with a recording handler and the answers it published."""

    def __init__(self, attach: bool = True) -> None:
        self.registry = CollectorRegistry()
        self.requests: list[dict[str, Any]] = []
        self.answers: list[tuple[str, dict[str, Any]]] = []
        self.router = MqttCommands(TOPICS, MqttMetrics(self.registry),
                                   lambda topic, body: self.answers.append((topic, json.loads(body))))  # fmt: skip
        if attach:
            self.router.attach(self.handle)

    def handle(self, doc: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(doc)
        return {"ok": True, "camera": doc["camera"], "seq": 7}

    def send(self, topic: str, payload: object, retained: bool = False) -> dict[str, Any] | None:
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        before = len(self.answers)
        self.router.receive(topic, raw, retained)
        return self.answers[-1][1] if len(self.answers) > before else None

    def counted(self, cmd: str, result: str) -> float:
        return (
            self.registry.get_sample_value("inspector_mqtt_commands_total", {"cmd": cmd, "result": result})
            or 0
        )


def test_a_trigger_goes_to_the_line_commands_with_the_topics_camera_and_its_answer_echoes_the_request_id() -> (
    None
):
    h = Harness()
    answer = h.send("p/cam1/command/trigger", {"part_id": "A-1", "request_id": "r1"})
    assert h.requests == [{"part_id": "A-1", "cmd": "trigger", "camera": "cam1"}]
    assert answer == {"ok": True, "camera": "cam1", "seq": 7, "cmd": "trigger", "request_id": "r1"}
    assert h.answers[-1][0] == "p/cam1/answer"
    assert h.counted("trigger", "ok") == 1


def test_bad_commands_are_answered_with_the_reason_and_never_reach_the_line() -> None:
    h = Harness()
    cases: list[tuple[str, object, str]] = [
        ("p/cam1/command/trigger", b"{nope", "not JSON"),
        ("p/cam1/command/trigger", ["A-1"], "a JSON object"),
        ("p/cam1/command/trigger", {"part_id": "A-1", "camera": "cam2"}, "differs from the topic's camera"),
        ("p/cam1/command/product", {"product": "b", "cmd": "trigger"}, "differs from the topic's command"),
        ("p/cam1/command/product", {"product": "b", "request_id": 5}, "request_id must be a string"),
        ("p/cam1/command/reload", {}, "unknown command 'reload'"),
    ]
    for topic, payload, says in cases:
        answer = h.send(topic, payload)
        assert answer is not None and answer["ok"] is False and says in answer["error"], (payload, answer)
    assert h.requests == []
    assert h.counted("trigger", "error") == 3 and h.counted("product", "error") == 2


def test_a_retained_command_is_ignored_and_counted_and_a_command_before_attach_is_refused() -> None:
    h = Harness()
    assert h.send("p/cam1/command/trigger", {"part_id": "A-1"}, retained=True) is None
    assert h.requests == [] and h.counted("trigger", "ignored") == 1
    early = Harness(attach=False)
    answer = early.send("p/cam1/command/product", {"product": "b"})
    assert answer is not None and answer["ok"] is False and "starting" in answer["error"]
    assert h.send("p/cam1/verdict", {"x": 1}) is None, "not a command topic: no answer"

"""Commands over MQTT (opt-in): trigger and product on ``<prefix>/<camera>/command/<cmd>``, handed to the
daemon's line commands (the ones the control socket answers), each answered on ``<prefix>/<camera>/answer``."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import structlog

from inspector.bus.control import decode_json, error_answer
from inspector.ops.mqtt_metrics import COMMAND_ERROR, COMMAND_IGNORED, COMMAND_OK, COMMANDS, MqttMetrics
from inspector.outputs.mqtt_topics import Topics

Handler = Callable[[dict[str, Any]], dict[str, Any]]  # a control request in, its answer out
REQUEST_ID = "request_id"  # echoed in the answer, so a sender can match answers to its commands
MAX_REQUEST_ID_CHARS = 128


class MqttCommands:
    """Routes command messages to the line commands; never raises, never acts on a retained message.

    Which users may publish commands is the broker's decision (its ACL, docs/mqtt.md): MQTT does not tell a
    subscriber who published. The daemon itself takes commands only on a logged-in connection (``[mqtt]``
    refuses ``commands_enabled`` without a username and password or a client certificate).
    """

    def __init__(self, topics: Topics, metrics: MqttMetrics, answer: Callable[[str, bytes], None]) -> None:
        """Answer through ``answer(topic, payload)``; commands wait for :meth:`attach`."""
        self._topics = topics
        self._metrics = metrics
        self._answer = answer
        self._handle: Handler | None = None
        self._log = structlog.stdlib.get_logger(__name__)

    def attach(self, handle: Handler) -> None:
        """Start acting on commands through ``handle`` (the daemon's ``LineCommands.handle``)."""
        self._handle = handle

    def receive(self, topic: str, payload: bytes, retained: bool) -> None:
        """One message on the command subscription."""
        where = self._topics.command_of(topic)
        if where is None:
            self._log.warning("mqtt_command_ignored", topic=topic, reason="not a command topic")
            return
        camera, cmd = where
        if cmd not in COMMANDS:
            self._log.warning("mqtt_command_ignored", topic=topic, reason=f"unknown command {cmd!r}")
            self._reply(
                camera, cmd, None, error_answer(f"unknown command {cmd!r}: use one of {', '.join(COMMANDS)}")
            )
            return
        if retained:  # a retained trigger would inspect a phantom part at every reconnect
            self._metrics.commands.labels(cmd=cmd, result=COMMAND_IGNORED).inc()
            self._log.warning(
                "mqtt_command_ignored", topic=topic, reason="retained: publish commands unretained"
            )
            return
        request_id, answer = self._answer_to(camera, cmd, payload)
        result = COMMAND_OK if answer.get("ok") else COMMAND_ERROR
        self._metrics.commands.labels(cmd=cmd, result=result).inc()
        self._log.info("mqtt_command", camera=camera, cmd=cmd, ok=answer.get("ok"), error=answer.get("error"))
        self._reply(camera, cmd, request_id, answer)

    def _answer_to(self, camera: str, cmd: str, payload: bytes) -> tuple[str | None, dict[str, Any]]:
        doc, problem = decode_json(payload, "command")
        if problem:
            return None, error_answer(problem)
        if not isinstance(doc, dict):
            return None, error_answer('a command is a JSON object, e.g. {"part_id": "A-000123"}')
        request_id = doc.pop(REQUEST_ID, None)
        if request_id is not None and not (
            isinstance(request_id, str) and len(request_id) <= MAX_REQUEST_ID_CHARS
        ):
            return None, error_answer(
                f"{REQUEST_ID} must be a string of at most {MAX_REQUEST_ID_CHARS} characters"
            )
        if doc.get("camera", camera) != camera:
            return request_id, error_answer(
                f"camera {doc['camera']!r} differs from the topic's camera {camera!r}"
            )
        if doc.get("cmd", cmd) != cmd:
            return request_id, error_answer(f"cmd {doc['cmd']!r} differs from the topic's command {cmd!r}")
        if self._handle is None:
            return request_id, error_answer("the daemon is starting: no commands yet")
        return request_id, self._handle({**doc, "cmd": cmd, "camera": camera})

    def _reply(self, camera: str, cmd: str, request_id: str | None, answer: dict[str, Any]) -> None:
        body = {**answer, "cmd": cmd, "camera": camera, REQUEST_ID: request_id}
        self._answer(self._topics.answer(camera), json.dumps(body).encode("utf-8"))

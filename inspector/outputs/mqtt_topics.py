"""The MQTT output's topics and the payloads that are not the verdict header: camera state and command answers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from inspector.bus.wire import Heartbeat

AVAILABILITY = "availability"
VERDICT = "verdict"
STATE = "state"
SNAPSHOT = "snapshot"
ANSWER = "answer"
COMMAND = "command"
WORKING_STATES = frozenset(
    {"ready", "degraded"}
)  # the daemon inspects parts (degraded: something else is wrong)
STOPPED = "stopped"  # the daemon's state in the last state message of a clean stop


@dataclass(frozen=True)
class Topics:
    """Every topic under one prefix (``inspector/line3``)."""

    prefix: str

    @property
    def availability(self) -> str:
        """``<prefix>/availability``: ``online`` (retained) while connected, ``offline`` as the last will."""
        return f"{self.prefix}/{AVAILABILITY}"

    def verdict(self, camera: str) -> str:
        """``<prefix>/<camera>/verdict``: each verdict header as the bus sent it."""
        return f"{self.prefix}/{camera}/{VERDICT}"

    def state(self, camera: str) -> str:
        """``<prefix>/<camera>/state``: the camera's state (retained)."""
        return f"{self.prefix}/{camera}/{STATE}"

    def snapshot(self, camera: str) -> str:
        """``<prefix>/<camera>/snapshot``: the overlay JPEG of the latest FAIL or REVIEW part (retained)."""
        return f"{self.prefix}/{camera}/{SNAPSHOT}"

    def answer(self, camera: str) -> str:
        """``<prefix>/<camera>/answer``: the answer to each command."""
        return f"{self.prefix}/{camera}/{ANSWER}"

    @property
    def commands(self) -> str:
        """The subscription of every camera's commands: ``<prefix>/+/command/+``."""
        return f"{self.prefix}/+/{COMMAND}/+"

    def command_of(self, topic: str) -> tuple[str, str] | None:
        """(camera, command) of a topic ``<prefix>/<camera>/command/<cmd>``; None for any other topic."""
        if not topic.startswith(self.prefix + "/"):
            return None
        levels = topic[len(self.prefix) + 1 :].split("/")
        if len(levels) != 3 or levels[1] != COMMAND or not levels[0] or not levels[2]:
            return None
        return levels[0], levels[2]


def camera_state(heartbeat: Heartbeat, camera: str, product: str | None) -> dict[str, Any]:
    """A camera's state message (without its time): ``ready`` when a part in front of it gets a verdict now,
    i.e. the daemon inspects (ready or degraded), its model worker makes progress and the camera is up."""
    status = heartbeat.cameras.get(camera)
    up = status.up if status is not None else False
    ready = heartbeat.state in WORKING_STATES and heartbeat.worker_alive and up
    return {
        "camera": camera,
        "ready": ready,
        "up": up,
        "state": status.state if status is not None else "starting",
        "product": product,
        "daemon": heartbeat.state,
        "boot_id": heartbeat.boot_id,
    }


def stopped_state(state: dict[str, Any]) -> dict[str, Any]:
    """The last state message of a clean stop: nothing is inspected any more."""
    return {**state, "ready": False, "up": False, "daemon": STOPPED}


def state_payload(state: dict[str, Any], published_at: str) -> bytes:
    """The retained JSON of a state message, stamped with its time."""
    return json.dumps({**state, "published_at": published_at}).encode("utf-8")

"""Tests for inspector.daemon.heartbeat: heartbeats reach the bus in the order of the daemon's phases."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import zmq

from inspector.bus.publisher import Publisher
from inspector.bus.wire import Heartbeat, decode_heartbeat, new_boot_id
from inspector.config.bus import BusConfig
from inspector.config.camera import CameraConfig
from inspector.config.root import InspectorConfig
from inspector.daemon.heartbeat import Heartbeats
from inspector.daemon.ledger import FrameLedger
from inspector.daemon.status import DaemonStatus

WAIT_S = 30.0
POLL_MS = 50

Context = zmq.Context[zmq.Socket[bytes]]


class SlowStatus(DaemonStatus):
    """A status whose first heartbeat takes until ``release`` is set (a thread preempted mid-snapshot)."""

    def __init__(self, config: InspectorConfig) -> None:
        super().__init__(config, new_boot_id(), FrameLedger(), lambda: 0)
        self.inside = threading.Event()
        self.release = threading.Event()
        self._first = True

    def heartbeat(self) -> Heartbeat:
        beat = super().heartbeat()
        if self._first:
            self._first = False
            self.inside.set()
            self.release.wait(WAIT_S)
        return beat


@pytest.fixture
def context() -> Iterator[Context]:
    ctx: Context = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def received_states(sub: zmq.Socket[bytes], count: int, wait_s: float = WAIT_S) -> list[str]:
    """The states of up to ``count`` heartbeats, each waited for at most ``wait_s``."""
    states: list[str] = []
    while len(states) < count and sub.poll(int(wait_s * 1000)):
        states.append(decode_heartbeat(sub.recv_multipart()).state)
    return states


def test_a_heartbeat_computed_while_starting_never_follows_the_ready_one(context: Context) -> None:
    config = InspectorConfig(
        cameras=[CameraConfig(name="cam1", source="0")], bus=BusConfig(bind="tcp://127.0.0.1:*")
    )
    status = SlowStatus(config)
    with Publisher(config.bus, context, status.boot_id) as pub:
        sub = context.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"heartbeat")
        sub.connect(pub.endpoint)
        beats = Heartbeats(pub, status, interval_s=0.05)
        while not sub.poll(POLL_MS):  # the slow joiner: until the subscription has reached the publisher
            pub.publish_heartbeat(DaemonStatus(config, status.boot_id, FrameLedger(), lambda: 0).heartbeat())
        while sub.poll(POLL_MS):
            sub.recv_multipart()
        stop = threading.Event()
        loop = threading.Thread(target=beats.run, args=(stop,))
        loop.start()
        assert status.inside.wait(WAIT_S)  # the loop is computing a 'starting' heartbeat, not yet sent
        ready = threading.Thread(target=beats.send, args=("ready",))
        ready.start()
        ready.join(0.2)
        assert ready.is_alive(), "the phase changed while a heartbeat from before the change was unsent"
        status.release.set()
        ready.join(WAIT_S)
        states = received_states(sub, 3)
        status.phase = "stopped"
        stop.set()
        loop.join(WAIT_S)
        last = received_states(sub, 1000, wait_s=1.0)[-1]  # the loop has ended: everything is sent
        sub.close(linger=0)
    # Ready by phase (this status has no pipeline attached, so its state reads degraded): never starting again.
    assert states[0] == "starting" and "starting" not in states[1:] and len(states) == 3, states
    assert last == "stopped"  # the last heartbeat after stop says how it ended

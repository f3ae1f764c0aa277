"""Tests for inspector.daemon.early: the ``starting`` heartbeat on a real bus, sent before PyTorch is loaded."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import zmq

from inspector.bus.publisher import Publisher
from inspector.bus.wire import Heartbeat, decode_heartbeat, new_boot_id
from inspector.config.bus import BusConfig
from inspector.config.camera import CameraConfig
from inspector.config.root import InspectorConfig
from inspector.daemon.early import EarlyHeartbeat
from tests.test_architecture import loaded_after_import

RECEIVE_MS = 10_000
HEARTBEATS = 3

Context = zmq.Context[zmq.Socket[bytes]]


@pytest.fixture
def context() -> Iterator[Context]:
    ctx: Context = zmq.Context()
    yield ctx
    ctx.term()


def test_early_heartbeat_says_starting_for_every_camera_with_the_daemons_boot_id_until_stopped(
    context: Context,
) -> None:
    config = InspectorConfig(
        cameras=[CameraConfig(name=n, source="0") for n in ("a", "b")],
        bus=BusConfig(bind="tcp://127.0.0.1:*", heartbeat_interval_s=0.05, linger_ms=0),
    )
    boot_id = new_boot_id()
    with Publisher(config.bus, context, boot_id) as pub:
        sub = context.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"heartbeat")
        sub.connect(pub.endpoint)
        early = EarlyHeartbeat(pub, config, started_at=time.monotonic() - 2.0)
        early.start()
        got: list[Heartbeat] = []
        while len(got) < HEARTBEATS and sub.poll(RECEIVE_MS):
            got.append(decode_heartbeat(sub.recv_multipart()))
        early.stop()
        sent = early.sent
        while sub.poll(200):
            sub.recv_multipart()
        assert not sub.poll(300), "a heartbeat after stop()"
        assert early.sent == sent
        sub.close(linger=0)
    assert len(got) == HEARTBEATS
    for hb in got:
        assert (hb.boot_id, hb.state, hb.worker, hb.worker_alive) == (boot_id, "starting", "starting", False)
        assert hb.frames_published == 0
        assert {name: cam.state for name, cam in hb.cameras.items()} == {"a": "starting", "b": "starting"}
        assert hb.uptime_s >= 2.0  # counted from the process start, not from the first heartbeat


def test_run_reaches_the_early_heartbeat_without_loading_torch() -> None:
    loaded = loaded_after_import("inspector.cli.daemon", "inspector.daemon.early", "inspector.bus.publisher")
    assert "torch" not in loaded
    assert "zmq" in loaded  # the check can fail: the modules were imported

"""Tests for inspector.bus.subscriptions through a real publisher: checked subscriptions, subscribers' budgets."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import pytest
import zmq

from inspector.bus.publisher import Publisher
from inspector.bus.subscriptions import SubscriberLimits, topic_check
from inspector.bus.wire import Heartbeat, new_boot_id, rfc3339
from inspector.config.bus import BusConfig
from tests.support import wait_until

Context = zmq.Context[zmq.Socket[bytes]]
SMALL_BUDGET = 2048
JUNK_BYTES = 500
POLL_MS = 20


@pytest.fixture
def context() -> Iterator[Context]:
    ctx: Context = zmq.Context()
    yield ctx
    ctx.term()


@pytest.mark.parametrize(
    ("topic", "allowed"),
    [
        (b"", True), (b"heart", True), (b"heartbeat", True), (b"verdict.", True), (b"verdict.cam", True),
        (b"verdict.cam1", True), (b"verdict.cam2", False), (b"verdict.cam1x", False), (b"heartbeats", False),
        (b"x" * 100, False), (b"\xff\x00", False),
    ],
)  # fmt: skip
def test_only_prefixes_of_the_daemons_topics_pass_the_check(topic: bytes, allowed: bool) -> None:
    assert topic_check(["cam1"])(topic) is allowed


def test_without_cameras_any_camera_name_passes_but_not_junk() -> None:
    check = topic_check(None)
    assert check(b"verdict.line-2_a") and check(b"verdict.") and check(b"heartbeat")
    assert not check(b"verdict.-bad") and not check(b"verdict.\x00") and not check(b"news")


def test_a_scan_finds_nothing_to_charge_on_a_port_without_connections() -> None:
    assert SubscriberLimits(1, 1024, 8).scan() == []


def _heartbeat(publisher: Publisher) -> Heartbeat:
    return Heartbeat(
        boot_id=publisher.boot_id, published_at=rfc3339(time.time()), state="ready", uptime_s=1.0,
        frames_published=0, worker_alive=True,
    )  # fmt: skip


def test_a_flooding_subscriber_is_dropped_while_a_good_one_keeps_receiving(context: Context) -> None:
    config = BusConfig(bind="tcp://127.0.0.1:*", max_subscription_bytes=SMALL_BUDGET, linger_ms=0)
    with Publisher(config, context, new_boot_id(), cameras=["cam1"]) as publisher:
        good = context.socket(zmq.SUB)
        good.setsockopt(zmq.LINGER, 0)
        good.setsockopt(zmq.SUBSCRIBE, b"heartbeat")
        good.connect(publisher.endpoint)
        flood = context.socket(zmq.SUB)
        flood.setsockopt(zmq.LINGER, 0)
        flood.connect(publisher.endpoint)
        received: list[bytes] = []

        def beat() -> int:
            publisher.publish_heartbeat(_heartbeat(publisher))
            while good.poll(POLL_MS):
                received.append(good.recv_multipart()[0])
            return len(received)

        wait_until(lambda: beat() > 0, "the good subscriber's first heartbeat")
        rng = random.Random(7)
        for _ in range(4):
            for _ in range(20):
                flood.setsockopt(zmq.SUBSCRIBE, rng.randbytes(JUNK_BYTES))
            beat()
        wait_until(
            lambda: beat() >= 0 and publisher.subscribers_dropped >= 1, "the flooding subscriber dropped"
        )
        assert publisher.subscriptions_refused > 0
        count = len(received)
        wait_until(lambda: beat() > count + 3, "heartbeats after the drop")
        assert set(received) == {b"heartbeat"}
        good.close()
        flood.close()

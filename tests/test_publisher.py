"""Tests for inspector.publisher with real ZeroMQ PUB/SUB sockets over TCP on localhost."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import zmq
from pydantic import ValidationError

from inspector.publisher import BusConfig, Publisher, PublisherError, run_heartbeats
from inspector.wire import (
    CameraStatus,
    Heartbeat,
    VerdictHeader,
    decode_heartbeat,
    decode_mask,
    decode_verdict,
    encode_mask,
    new_boot_id,
    rfc3339,
)

RECEIVE_DEADLINE_S = 5.0
POLL_MS = 20
FIXED_NOW = 1_714_564_800.5
ANY_PORT = "tcp://127.0.0.1:*"

Context = zmq.Context[zmq.Socket[bytes]]


@pytest.fixture
def context() -> Iterator[Context]:
    """A fresh ZeroMQ context, terminated after the test."""
    ctx: Context = zmq.Context()
    yield ctx
    ctx.term()


def make_header(camera: str = "cam1", seq: int = 0, **overrides: Any) -> VerdictHeader:
    """A valid PASS header with a placeholder boot id and publish time (both restamped by the publisher)."""
    fields: dict[str, Any] = {
        "boot_id": "f" * 32,
        "camera": camera,
        "seq": seq,
        "captured_at": rfc3339(FIXED_NOW - 0.05),
        "published_at": rfc3339(0.0),
        "verdict": "PASS",
        "score": 0.5,
        "threshold": 2.0,
        "defect_area_px": 0,
    }
    fields.update(overrides)
    return VerdictHeader.model_validate(fields)


def make_heartbeat(state: str = "ready") -> Heartbeat:
    """A heartbeat snapshot with one camera."""
    return Heartbeat.model_validate(
        {
            "boot_id": "f" * 32,
            "published_at": rfc3339(0.0),
            "state": state,
            "uptime_s": 1.0,
            "cameras": {"cam1": CameraStatus(up=True, frames=3, last_seq=2)},
            "frames_published": 3,
            "worker_alive": True,
        }
    )


def subscriber(context: Context, endpoint: str, topic: bytes = b"") -> zmq.Socket[bytes]:
    """A SUB socket connected to ``endpoint`` and subscribed to ``topic``."""
    sock = context.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SUBSCRIBE, topic)
    sock.connect(endpoint)
    return sock


def publish_until_received(
    publish: Any, sub: zmq.Socket[bytes], deadline_s: float = RECEIVE_DEADLINE_S
) -> list[bytes]:
    """Handle the slow joiner: publish repeatedly until the subscriber gets a message (bounded in time)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        publish()
        if sub.poll(POLL_MS):
            return sub.recv_multipart()
    raise AssertionError(f"no message received within {deadline_s} s")


def test_bus_config_defaults_and_validation() -> None:
    config = BusConfig()
    assert (config.bind, config.sndhwm, config.linger_ms, config.mask) == (
        "tcp://127.0.0.1:5556",
        10000,
        2000,
        "anomaly_map",
    )
    with pytest.raises(ValidationError, match="sndhwm"):
        BusConfig(sndhwm=0)
    with pytest.raises(ValidationError, match="heartbeat_interval_s"):
        BusConfig(heartbeat_interval_s=61)
    with pytest.raises(ValidationError, match="bogus"):
        BusConfig.model_validate({"bogus": 1})


def test_subscriber_receives_verdict_with_mask_stamped_by_publisher(context: Context) -> None:
    boot_id = new_boot_id()
    with Publisher(BusConfig(bind=ANY_PORT), context, boot_id, clock=lambda: FIXED_NOW) as pub:
        assert pub.endpoint.startswith("tcp://127.0.0.1:")
        sub = subscriber(context, pub.endpoint, b"verdict.")
        mask = np.zeros((32, 40), dtype=np.uint8)
        mask[4:10, 5:9] = 255
        png, info = encode_mask(mask, kind="binary")
        header = make_header(mask=info, verdict="FAIL", score=3.0, defect_area_px=24)
        parts = publish_until_received(lambda: pub.publish_verdict(header, png), sub)
        sub.close()
    topic, got, mask_bytes = decode_verdict(parts)
    assert topic == "verdict.cam1"
    assert got.boot_id == boot_id
    assert got.published_at == rfc3339(FIXED_NOW)
    assert got.model_copy(update={"boot_id": header.boot_id, "published_at": header.published_at}) == header
    restored = decode_mask(mask_bytes, got.mask)
    assert restored is not None
    np.testing.assert_array_equal(restored, mask)
    assert pub.verdicts_published >= 1


def test_subscriber_filters_by_camera_topic(context: Context) -> None:
    with Publisher(BusConfig(bind=ANY_PORT), context, new_boot_id()) as pub:
        sub = subscriber(context, pub.endpoint, b"verdict.cam2")

        def publish_both() -> None:
            pub.publish_verdict(make_header("cam1"), b"")
            pub.publish_verdict(make_header("cam2"), b"")

        parts = publish_until_received(publish_both, sub)
        while sub.poll(POLL_MS):
            assert sub.recv_multipart()[0] == b"verdict.cam2"
        sub.close()
    assert parts[0] == b"verdict.cam2"


def test_heartbeat_is_received_and_decoded(context: Context) -> None:
    boot_id = new_boot_id()
    with Publisher(BusConfig(bind=ANY_PORT), context, boot_id) as pub:
        sub = subscriber(context, pub.endpoint, b"heartbeat")
        parts = publish_until_received(lambda: pub.publish_heartbeat(make_heartbeat()), sub)
        sub.close()
    hb = decode_heartbeat(parts)
    assert hb.boot_id == boot_id
    assert hb.cameras["cam1"].last_seq == 2


def test_bind_failure_names_the_address(context: Context) -> None:
    with Publisher(BusConfig(bind=ANY_PORT), context, new_boot_id()) as first:
        second = Publisher(BusConfig(bind=first.endpoint), context, new_boot_id())
        with pytest.raises(PublisherError, match=first.endpoint):
            second.bind()
        second.close()


def test_invalid_endpoint_is_reported_with_field_name(context: Context) -> None:
    pub = Publisher(BusConfig(bind="nonsense://x"), context, new_boot_id())
    with pytest.raises(PublisherError, match=r"bus\.bind.*nonsense://x"):
        pub.bind()


def test_publish_before_bind_or_after_close_raises(context: Context) -> None:
    pub = Publisher(BusConfig(bind=ANY_PORT), context, new_boot_id())
    with pytest.raises(PublisherError, match="not bound"):
        pub.publish_verdict(make_header(), b"")
    pub.bind()
    pub.close()
    pub.close()  # idempotent
    with pytest.raises(PublisherError, match="closed"):
        pub.publish_heartbeat(make_heartbeat())


def test_close_with_zero_linger_lets_context_terminate_promptly(context: Context) -> None:
    pub = Publisher(BusConfig(bind=ANY_PORT, linger_ms=0), context, new_boot_id())
    pub.bind()
    for seq in range(100):
        pub.publish_verdict(make_header(seq=seq), b"")
    pub.close()
    start = time.monotonic()
    context.term()
    assert time.monotonic() - start < 1.0


def test_concurrent_publishers_threads_deliver_intact_messages(context: Context) -> None:
    threads_n, per_thread = 4, 50
    with Publisher(BusConfig(bind=ANY_PORT), context, new_boot_id()) as pub:
        sub = subscriber(context, pub.endpoint, b"verdict.")
        publish_until_received(lambda: pub.publish_verdict(make_header("warmup"), b""), sub)

        def worker(index: int) -> None:
            for seq in range(per_thread):
                pub.publish_verdict(make_header(f"cam{index}", seq), b"")

        workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads_n)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        seen: dict[str, list[int]] = {}
        while sub.poll(500):
            _, header, _ = decode_verdict(sub.recv_multipart())
            seen.setdefault(header.camera, []).append(header.seq)
        sub.close()
    for index in range(threads_n):
        assert seen[f"cam{index}"] == list(range(per_thread))


def test_run_heartbeats_publishes_until_stopped_then_a_final_one(context: Context) -> None:
    states = iter(["starting", "ready", "ready", "ready"])
    last = {"state": "starting"}

    def snapshot() -> Heartbeat:
        last["state"] = next(states, "stopping")
        return make_heartbeat(last["state"])

    with Publisher(BusConfig(bind=ANY_PORT), context, new_boot_id()) as pub:
        sub = subscriber(context, pub.endpoint, b"heartbeat")
        stop = threading.Event()
        thread = threading.Thread(target=run_heartbeats, args=(pub, snapshot, 0.01, stop))
        thread.start()
        assert sub.poll(int(RECEIVE_DEADLINE_S * 1000))
        stop.set()
        thread.join(RECEIVE_DEADLINE_S)
        assert not thread.is_alive()
        received = []
        while sub.poll(200):
            received.append(decode_heartbeat(sub.recv_multipart()).state)
        sub.close()
    assert received[-1] == last["state"]

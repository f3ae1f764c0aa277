"""Tests for inspector.bus.publisher with real ZeroMQ PUB/SUB sockets over TCP on localhost."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import zmq
from pydantic import ValidationError

from inspector.bus.publisher import Publisher, PublisherError, run_heartbeats, verdict_header
from inspector.bus.wire import (
    MAX_DEFECTS,
    NO_MASK,
    CameraStatus,
    Heartbeat,
    anomaly_map_to_u8,
    decode_heartbeat,
    decode_mask,
    decode_verdict,
    new_boot_id,
    rfc3339,
)
from inspector.config.bus import BusConfig
from inspector.core.names import COMPUTE_STAGES
from inspector.core.records import DefectRegion, Frame, Outcome
from tests.support import bus_outcome

RECEIVE_DEADLINE_S = 5.0
TERM_BOUND_S = 30.0  # generous: term() returns at once when linger is honoured, never when it is not
POLL_MS = 20
FIXED_NOW = 1_714_564_800.5
FIXED_MONOTONIC = 5_000.0
ANY_PORT = "tcp://127.0.0.1:*"
STAGES_MS = dict.fromkeys(("queue", *COMPUTE_STAGES), 0.0)  # what the worker times for a scored frame

Context = zmq.Context[zmq.Socket[bytes]]


@pytest.fixture
def context() -> Iterator[Context]:
    """A fresh ZeroMQ context, terminated after the test."""
    ctx: Context = zmq.Context()
    yield ctx
    ctx.term()


def make_outcome(camera: str = "cam1", seq: int = 0, **overrides: Any) -> Outcome:
    """An outcome (PASS unless ``verdict`` says otherwise) of a frame captured 50 ms before FIXED_NOW
    (monotonic time FIXED_MONOTONIC - 0.05), image and pixel thresholds 2.0 when scored."""
    frame = Frame(camera, seq, FIXED_NOW - 0.05, FIXED_MONOTONIC - 0.05, np.zeros((4, 4, 3), np.uint8), "A-1")
    verdict = overrides.pop("verdict", "PASS")
    scored = {"threshold": 2.0, "pixel_threshold": 2.0} if verdict in ("PASS", "FAIL") else {}
    return bus_outcome(frame, verdict, **(scored | overrides))


def fixed_publisher(context: Context, boot_id: str, **bus: Any) -> Publisher:
    """A publisher whose clocks stand still at FIXED_NOW / FIXED_MONOTONIC."""
    config = BusConfig(bind=ANY_PORT, **bus)
    return Publisher(config, context, boot_id, clock=lambda: FIXED_NOW, monotonic=lambda: FIXED_MONOTONIC)


def make_heartbeat(state: str = "ready", boot_id: str = "f" * 32) -> Heartbeat:
    """A heartbeat snapshot with one camera."""
    return Heartbeat.model_validate(
        {
            "boot_id": boot_id,
            "published_at": rfc3339(0.0),
            "state": state,
            "uptime_s": 1.0,
            "cameras": {"cam1": CameraStatus(state="up", up=True, frames=3, last_seq=2)},
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
    assert (config.bind, config.sndhwm, config.sndbuf_bytes, config.linger_ms, config.mask) == (
        "tcp://127.0.0.1:5556",
        100,
        65536,
        2000,
        "anomaly_map",
    )
    with pytest.raises(ValidationError, match="sndhwm"):
        BusConfig(sndhwm=0)
    with pytest.raises(ValidationError, match="heartbeat_interval_s"):
        BusConfig(heartbeat_interval_s=61)
    with pytest.raises(ValidationError, match="bogus"):
        BusConfig.model_validate({"bogus": 1})


def test_publisher_builds_the_header_from_the_outcome_with_boot_id_times_and_latencies(
    context: Context,
) -> None:
    boot_id = new_boot_id()
    mask = np.zeros((32, 40), dtype=np.uint8)
    mask[4:10, 5:9] = 255
    outcome = make_outcome(verdict="FAIL", score=3.0, defect_area_px=24, mask=mask, gallery="ab" * 32,
                           latency_ms={**STAGES_MS, "queue": 1.5, "backbone": 7.0})  # fmt: skip
    with fixed_publisher(context, boot_id, mask="binary") as pub:
        assert pub.endpoint.startswith("tcp://127.0.0.1:")
        sub = subscriber(context, pub.endpoint, b"verdict.")
        parts = publish_until_received(lambda: pub.publish(outcome), sub)
        sub.close()
    topic, got, mask_bytes = decode_verdict(parts)
    assert topic == "verdict.cam1"
    assert (got.boot_id, got.camera, got.seq, got.part_id) == (boot_id, "cam1", 0, "A-1")
    assert (got.captured_at, got.published_at) == (rfc3339(FIXED_NOW - 0.05), rfc3339(FIXED_NOW))
    assert (got.verdict, got.score, got.threshold, got.defect_area_px, got.gallery) == (
        "FAIL",
        3.0,
        2.0,
        24,
        "ab" * 32,
    )
    assert got.latency_ms["queue"] == 1.5 and got.latency_ms["backbone"] == 7.0
    assert got.latency_ms["end_to_end"] == pytest.approx(50.0) and got.latency_ms["encode"] == 0.0
    assert got.error is None and got.mask.kind == "binary"
    restored = decode_mask(mask_bytes, got.mask)
    assert restored is not None
    np.testing.assert_array_equal(restored, mask)
    assert pub.verdicts_published >= 1


def test_anomaly_map_mode_sends_the_map_scaled_with_128_at_the_pixel_threshold(context: Context) -> None:
    amap = np.linspace(0.0, 6.0, 32 * 40, dtype=np.float32).reshape(32, 40)
    outcome = make_outcome(anomaly_map=amap, pixel_threshold=2.0, mask=np.zeros((32, 40), np.uint8))
    with fixed_publisher(context, new_boot_id()) as pub:
        sub = subscriber(context, pub.endpoint, b"verdict.")
        parts = publish_until_received(lambda: pub.publish(outcome), sub)
        sub.close()
    _, got, mask_bytes = decode_verdict(parts)
    assert got.mask.kind == "anomaly_map_u8"
    np.testing.assert_array_equal(decode_mask(mask_bytes, got.mask), anomaly_map_to_u8(amap, 2.0))


def test_no_mask_mode_and_unscored_outcomes_send_an_empty_mask_part(context: Context) -> None:
    scored = make_outcome(mask=np.zeros((8, 8), np.uint8))
    timeout = make_outcome(seq=1, verdict="TIMEOUT", error="late")
    with fixed_publisher(context, new_boot_id(), mask="none") as pub:
        sub = subscriber(context, pub.endpoint, b"verdict.")
        first = publish_until_received(lambda: pub.publish(scored), sub)
        pub.publish(timeout)
        assert sub.poll(int(RECEIVE_DEADLINE_S * 1000))
        second = sub.recv_multipart()
        sub.close()
    for parts in (first, second):
        _, header, mask_bytes = decode_verdict(parts)
        assert header.mask.encoding == "none" and mask_bytes == b""
    _, late, _ = decode_verdict(second)
    assert (late.verdict, late.error, late.score) == ("TIMEOUT", "late", None)


def test_an_outcome_that_cannot_be_encoded_raises_and_sends_nothing(context: Context) -> None:
    with fixed_publisher(context, new_boot_id()) as pub:
        with pytest.raises(ValueError, match="score"):
            pub.publish(make_outcome(score=float("nan")))
        assert pub.verdicts_published == 0


def test_subscriber_filters_by_camera_topic(context: Context) -> None:
    with Publisher(BusConfig(bind=ANY_PORT), context, new_boot_id()) as pub:
        sub = subscriber(context, pub.endpoint, b"verdict.cam2")

        def publish_both() -> None:
            pub.publish(make_outcome("cam1"))
            pub.publish(make_outcome("cam2"))

        parts = publish_until_received(publish_both, sub)
        while sub.poll(POLL_MS):
            assert sub.recv_multipart()[0] == b"verdict.cam2"
        sub.close()
    assert parts[0] == b"verdict.cam2"


def test_heartbeat_is_received_and_decoded_and_a_foreign_boot_id_refused(context: Context) -> None:
    boot_id = new_boot_id()
    with fixed_publisher(context, boot_id) as pub:
        sub = subscriber(context, pub.endpoint, b"heartbeat")
        parts = publish_until_received(lambda: pub.publish_heartbeat(make_heartbeat(boot_id=boot_id)), sub)
        sub.close()
        with pytest.raises(ValueError, match="boot_id"):
            pub.publish_heartbeat(make_heartbeat(boot_id=new_boot_id()))
    hb = decode_heartbeat(parts)
    assert hb.boot_id == boot_id and hb.published_at == rfc3339(FIXED_NOW)
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
        pub.publish(make_outcome())
    pub.bind()
    pub.close()
    pub.close()  # idempotent
    with pytest.raises(PublisherError, match="closed"):
        pub.publish_heartbeat(make_heartbeat(boot_id=pub.boot_id))


def test_close_with_zero_linger_lets_the_context_terminate_with_messages_still_queued() -> None:
    """With linger 0, queued verdicts for a subscriber that never reads are dropped at close; ZeroMQ's
    default (wait for ever) would block the context's term() as long as that subscriber lives."""
    context: Context = zmq.Context()
    reader: Context = zmq.Context()  # a live peer in another context, never reading
    pub = Publisher(BusConfig(bind=ANY_PORT, linger_ms=0, sndhwm=100_000), context, new_boot_id())
    pub.bind()
    sub = subscriber(reader, pub.endpoint, b"verdict.")
    sub.setsockopt(zmq.RCVHWM, 1)
    publish_until_received(lambda: pub.publish(make_outcome()), sub)  # connected and subscribed
    for seq in range(20_000):
        pub.publish(make_outcome(seq=seq))
    pub.close()
    terminated = threading.Thread(target=context.term, daemon=True)
    terminated.start()
    terminated.join(TERM_BOUND_S)
    alive = terminated.is_alive()
    sub.close(linger=0)
    reader.term()
    assert not alive, "context.term() still blocked by queued messages after close with linger_ms=0"


def test_concurrent_publishers_threads_deliver_intact_messages(context: Context) -> None:
    threads_n, per_thread = 4, 50
    with Publisher(BusConfig(bind=ANY_PORT, sndhwm=10_000), context, new_boot_id()) as pub:
        sub = subscriber(context, pub.endpoint, b"verdict.")
        publish_until_received(lambda: pub.publish(make_outcome("warmup")), sub)

        def worker(index: int) -> None:
            for seq in range(per_thread):
                pub.publish(make_outcome(f"cam{index}", seq))

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
        return make_heartbeat(last["state"], boot_id)

    boot_id = new_boot_id()
    with Publisher(BusConfig(bind=ANY_PORT), context, boot_id) as pub:
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


STALL_MESSAGES = 3000  # ~4 KB each: 12 MB, far more than any socket buffer on the way
CHUNK = 10  # below sndhwm: the active subscriber never has more queued than its high-water mark
MAP_SIDE_PX = 64


def noisy_outcome(seq: int) -> Outcome:
    """A PASS outcome whose anomaly map PNG does not compress (~4 KB on the wire)."""
    rng = np.random.default_rng(seq)
    amap = rng.random((MAP_SIDE_PX, MAP_SIDE_PX), dtype=np.float32) * 4.0
    return make_outcome(seq=seq, anomaly_map=amap, pixel_threshold=2.0)


def drain(sock: zmq.Socket[bytes], idle_ms: int = 500) -> list[int]:
    """Seqs of the verdicts a socket holds, until it is quiet for ``idle_ms``."""
    seqs = []
    while sock.poll(idle_ms):
        parts = sock.recv_multipart()
        if parts[0].startswith(b"verdict."):
            seqs.append(decode_verdict(parts)[1].seq)
    return seqs


@pytest.mark.faults
def test_a_stalled_subscriber_loses_messages_with_a_gap_while_an_active_one_gets_every_verdict(
    context: Context,
) -> None:
    """The staleness bound: what a stalled subscriber gets late is bounded by sndhwm and the socket buffers,
    the rest it loses (a gap in seq); an active subscriber on the same socket misses nothing."""
    config = BusConfig(bind=ANY_PORT, sndhwm=20, sndbuf_bytes=65536, linger_ms=0)
    with Publisher(config, context, new_boot_id()) as pub:
        stalled = subscriber(context, pub.endpoint, b"verdict.")
        stalled.setsockopt(zmq.RCVHWM, 1)
        active = subscriber(context, pub.endpoint, b"verdict.")
        for sock in (stalled, active):
            publish_until_received(lambda: pub.publish(make_outcome(seq=0)), sock)
        drain(active, 100)
        got: list[int] = []
        for start in range(1, STALL_MESSAGES + 1, CHUNK):
            for seq in range(start, start + CHUNK):
                pub.publish(noisy_outcome(seq))
            while len(got) < start + CHUNK - 1 and active.poll(int(RECEIVE_DEADLINE_S * 1000)):
                got.append(decode_verdict(active.recv_multipart())[1].seq)  # keeps up: nothing dropped
        late = [seq for seq in drain(stalled) if seq > 0]
        after = STALL_MESSAGES + 1  # the subscriber reads again: the next verdict reveals what it lost
        resumed = decode_verdict(
            publish_until_received(lambda: pub.publish(make_outcome(seq=after)), stalled)
        )
        stalled.close()
        active.close()
    assert got == list(range(1, STALL_MESSAGES + 1))
    assert 0 < len(late) < STALL_MESSAGES // 4, f"stalled subscriber got {len(late)} of {STALL_MESSAGES}"
    assert resumed[1].seq == after and after - late[-1] > 1, "no gap: the stalled subscriber lost nothing"


def test_the_header_carries_the_defect_count_and_the_listed_regions_largest_first(context: Context) -> None:
    regions = tuple(DefectRegion(100 - i, 2.0 + i, i, i, i + 3, i + 4) for i in range(MAX_DEFECTS + 3))
    outcome = make_outcome(verdict="FAIL", score=3.0, defects=regions, defect_count=40)
    with fixed_publisher(context, new_boot_id()) as pub:
        sub = subscriber(context, pub.endpoint, b"verdict.")
        parts = publish_until_received(lambda: pub.publish(outcome), sub)
        sub.close()
    _, got, _ = decode_verdict(parts)
    assert got.defect_count == 40 and len(got.defects) == MAX_DEFECTS
    assert [(d.area_px, d.peak, d.box) for d in got.defects[:2]] == [
        (100, 2.0, (0, 0, 3, 4)),
        (99, 3.0, (1, 1, 4, 5)),
    ]
    stages = {**STAGES_MS, "encode": 0.0, "end_to_end": 0.0}
    plain = verdict_header(make_outcome(), "0" * 32, rfc3339(FIXED_NOW), stages, NO_MASK)
    assert plain.defects == [] and plain.defect_count == 0

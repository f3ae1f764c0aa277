"""Tests for inspector.daemon.pipeline: a real worker, real PUB/SUB sockets and the frame ledger's invariant."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
import zmq
from prometheus_client import CollectorRegistry

from inspector.bus.publisher import Publisher
from inspector.bus.wire import CameraStatus, Heartbeat, decode_verdict, new_boot_id, rfc3339
from inspector.config.batching import BatchingConfig
from inspector.config.bus import BusConfig
from inspector.config.camera import CameraConfig
from inspector.config.root import InspectorConfig
from inspector.config.worker import WorkerConfig
from inspector.core.records import Frame, Outcome
from inspector.daemon.batching import Batcher
from inspector.daemon.ledger import DROP_SHUTDOWN_TIMEOUT, FrameLedger
from inspector.daemon.pipeline import DROP_PUBLISH_FAILED, Pipeline
from inspector.daemon.sinks import BusSink
from inspector.daemon.worker import ModelWorker
from inspector.demo.data import read_video_frames
from inspector.ops.metrics import InspectorMetrics
from tests.support import LabelledVideo, SyntheticGallery, load_registry, wait_until

Context = zmq.Context[zmq.Socket[bytes]]
RECEIVE_TIMEOUT_S = 10.0
NOTHING_ARRIVES_S = 0.5  # how long to listen when asserting that no verdict is published
PIPELINE_JOIN_S = 60.0


class ListSource:
    """A FrameSource over a list: hands out queued frames, waits on an event when empty."""

    def __init__(self, frames: list[Frame]) -> None:
        self.frames = list(frames)
        self.gate = threading.Event()
        self.gate.set()
        self.blocked = threading.Event()

    def get_frames(self, max_items: int, timeout_s: float) -> list[Frame]:
        if not self.gate.is_set():
            self.blocked.set()
        self.gate.wait()  # cleared by a test to make the step hang like a stuck device
        out, self.frames = self.frames[:max_items], self.frames[max_items:]
        if not out:
            threading.Event().wait(min(timeout_s, 0.01))
        return out


@pytest.fixture(scope="module")
def worker(synthetic_gallery: SyntheticGallery) -> ModelWorker:
    cams = [CameraConfig(name=n, source="0") for n in ("cam1", "cam2")]
    cfg = InspectorConfig(cameras=cams, worker=WorkerConfig(gallery=synthetic_gallery.path))
    return ModelWorker(load_registry(cfg))


@pytest.fixture
def bus() -> Iterator[tuple[Publisher, zmq.Socket[bytes]]]:
    """A bound publisher and a SUB socket whose subscription is known to be live."""
    ctx: Context = zmq.Context()
    publisher = Publisher(BusConfig(bind="tcp://127.0.0.1:*", linger_ms=0), ctx, new_boot_id())
    endpoint = publisher.bind()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    hb = Heartbeat(
        boot_id=publisher.boot_id,
        published_at=rfc3339(0),
        state="ready",
        uptime_s=0.0,
        cameras={"cam1": CameraStatus(state="up", up=True, frames=0)},
        frames_published=0,
        worker_alive=True,
    )
    deadline = time.monotonic() + RECEIVE_TIMEOUT_S
    while not sub.poll(50):  # PUB/SUB slow joiner: publish heartbeats until one arrives
        assert time.monotonic() < deadline, "SUB never connected"
        publisher.publish_heartbeat(hb)
    while sub.poll(50):
        sub.recv_multipart()
    yield publisher, sub
    sub.close(linger=0)
    publisher.close()
    ctx.term()


def frames_of(images: list[np.ndarray], camera: str, age_s: float = 0.0, first_seq: int = 0) -> list[Frame]:
    now = time.monotonic()
    return [
        Frame(camera, first_seq + i, time.time() - age_s, now - age_s, image)
        for i, image in enumerate(images)
    ]


def receive_verdicts(
    sub: zmq.Socket[bytes], count: int, timeout_s: float = RECEIVE_TIMEOUT_S
) -> list[tuple[str, int, str]]:
    got: list[tuple[str, int, str]] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count and time.monotonic() < deadline:
        if sub.poll(50):
            parts = sub.recv_multipart()
            if parts[0].startswith(b"verdict."):
                _, header, _ = decode_verdict(parts)
                got.append((header.camera, header.seq, header.verdict))
    return got


def test_every_accepted_frame_ends_in_exactly_one_verdict_or_counted_drop(
    worker: ModelWorker, bus: tuple[Publisher, zmq.Socket[bytes]], labelled_video: LabelledVideo
) -> None:
    publisher, sub = bus
    video, labels = labelled_video("line", 6, seed=3)
    images = read_video_frames(video)
    broken = np.zeros((8, 8, 5), np.uint8)
    frames = [*frames_of(images, "cam1"), *frames_of([broken], "cam1", first_seq=6)]
    frames += frames_of(images[:2], "cam2", age_s=30.0)  # far past the deadline: TIMEOUT
    registry = CollectorRegistry()
    metrics = InspectorMetrics(registry, include_process_collector=False)
    ledger = FrameLedger(metrics)
    config = BatchingConfig(max_batch=4, max_wait_ms=10.0, deadline_ms=20_000.0)
    pipeline = Pipeline(
        ListSource(frames), Batcher(config), worker, BusSink(publisher, metrics), ledger, metrics
    )
    pipeline.input_closed.set()  # drain everything, then return
    pipeline.run()
    got = receive_verdicts(sub, len(frames))
    assert sorted((c, s) for c, s, _ in got) == sorted((f.camera, f.seq) for f in frames)
    expected = {("cam1", i): "PASS" if lab is None else "FAIL" for i, lab in enumerate(labels)}
    expected |= {("cam1", 6): "ERROR", ("cam2", 0): "TIMEOUT", ("cam2", 1): "TIMEOUT"}
    assert {(c, s): v for c, s, v in got} == expected
    tally = ledger.tally()
    assert ledger.outstanding == 0
    for camera in ("cam1", "cam2"):
        t = tally[camera]
        assert t.accepted == t.published_total + sum(t.dropped.values())
        for verdict, count in t.published.items():
            assert (
                registry.get_sample_value("inspector_verdicts_total", {"camera": camera, "verdict": verdict})
                == count
            )
    assert (
        registry.get_sample_value("inspector_batch_size_count") == 2
    )  # 4 + 3 cam1 frames; TIMEOUTs unbatched


def test_abandoned_frames_are_counted_once_and_never_published_late(
    worker: ModelWorker, bus: tuple[Publisher, zmq.Socket[bytes]]
) -> None:
    publisher, sub = bus
    ledger = FrameLedger()
    pipeline = Pipeline(ListSource([]), Batcher(BatchingConfig()), worker, BusSink(publisher), ledger, None)
    first, second = frames_of([np.zeros((16, 16, 3), np.uint8)] * 2, "cam1")
    assert ledger.accept(first)
    assert ledger.abandon(DROP_SHUTDOWN_TIMEOUT) == [first]
    assert not pipeline.publish(worker.failure(first, "TIMEOUT", "late"))
    assert not ledger.accept(second)  # closed: counted as dropped at once
    assert publisher.verdicts_published == 0 and receive_verdicts(sub, 1, NOTHING_ARRIVES_S) == []
    t = ledger.tally()["cam1"]
    assert (t.accepted, t.published_total, t.dropped) == (2, 0, {DROP_SHUTDOWN_TIMEOUT: 2})


def test_a_verdict_the_bus_refuses_is_counted_as_dropped(worker: ModelWorker) -> None:
    ctx: Context = zmq.Context()
    publisher = Publisher(BusConfig(bind="tcp://127.0.0.1:*", linger_ms=0), ctx, new_boot_id())
    publisher.bind()
    publisher.close()
    registry = CollectorRegistry()
    ledger = FrameLedger(InspectorMetrics(registry, include_process_collector=False))
    pipeline = Pipeline(ListSource([]), Batcher(BatchingConfig()), worker, BusSink(publisher), ledger, None)
    (frame,) = frames_of([np.zeros((16, 16, 3), np.uint8)], "cam1")
    ledger.accept(frame)
    assert not pipeline.publish(worker.failure(frame, "ERROR", "test"))
    assert ledger.tally()["cam1"].dropped == {DROP_PUBLISH_FAILED: 1}
    labels = {"camera": "cam1", "reason": DROP_PUBLISH_FAILED}
    assert registry.get_sample_value("inspector_frames_dropped_total", labels) == 1
    ctx.term()


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_stall_time_grows_while_a_step_hangs_and_resets_when_it_returns(
    worker: ModelWorker, bus: tuple[Publisher, zmq.Socket[bytes]]
) -> None:
    publisher, _ = bus
    source = ListSource([])
    clock = FakeClock()
    pipeline = Pipeline(
        source, Batcher(BatchingConfig()), worker, BusSink(publisher), FrameLedger(), None, clock=clock
    )
    source.gate.clear()
    thread = threading.Thread(target=pipeline.run, daemon=True)
    thread.start()
    wait_until(source.blocked.is_set, "the pipeline to block in its source", RECEIVE_TIMEOUT_S)
    clock.now += 45.0
    assert pipeline.stalled_for_s() == 45.0
    source.gate.set()
    wait_until(lambda: pipeline.stalled_for_s() == 0.0, "the next step to record progress", RECEIVE_TIMEOUT_S)
    pipeline.input_closed.set()
    thread.join(PIPELINE_JOIN_S)
    assert not thread.is_alive()


class RecordingSink:
    """A sink that keeps what it is given, or raises when told to."""

    name = "recorder"

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.got: list[Outcome] = []

    def deliver(self, outcome: Outcome) -> None:
        if self.fail:
            raise OSError("disk full")
        self.got.append(outcome)

    def close(self) -> None:
        pass


def test_every_published_outcome_reaches_the_other_sinks_and_a_failing_one_loses_no_verdict(
    worker: ModelWorker, bus: tuple[Publisher, zmq.Socket[bytes]]
) -> None:
    publisher, sub = bus
    registry = CollectorRegistry()
    metrics = InspectorMetrics(registry, include_process_collector=False)
    ledger = FrameLedger(metrics)
    good, broken = RecordingSink(), RecordingSink(fail=True)
    broken.name = "archive"
    pipeline = Pipeline(ListSource([]), Batcher(BatchingConfig()), worker, BusSink(publisher, metrics), ledger,
                        metrics, sinks=[broken, good])  # fmt: skip
    frames = frames_of([np.zeros((16, 16, 3), np.uint8)] * 3, "cam1")
    for frame in frames:
        ledger.accept(frame)
        assert pipeline.publish(worker.failure(frame, "ERROR", "test"))
    assert [o.seq for o in good.got] == [0, 1, 2]
    assert [seq for _, seq, _ in receive_verdicts(sub, 3)] == [0, 1, 2]
    assert registry.get_sample_value("inspector_sink_errors_total", {"sink": "archive"}) == 3
    assert ledger.tally()["cam1"].published == {"ERROR": 3}


def test_an_outcome_the_wire_cannot_carry_is_published_as_an_error_verdict(
    worker: ModelWorker, bus: tuple[Publisher, zmq.Socket[bytes]]
) -> None:
    publisher, sub = bus
    ledger = FrameLedger()
    pipeline = Pipeline(ListSource([]), Batcher(BatchingConfig()), worker, BusSink(publisher), ledger, None)
    (frame,) = frames_of([np.zeros((16, 16, 3), np.uint8)], "cam1")
    ledger.accept(frame)
    assert pipeline.publish(Outcome(frame, "PASS", score=float("inf"), threshold=1.0))
    assert receive_verdicts(sub, 1) == [("cam1", 0, "ERROR")]
    assert ledger.tally()["cam1"].published == {"ERROR": 1}

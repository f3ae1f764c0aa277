"""Tests for inspector.daemon.batching: size/age-triggered batches and deadline expiry, on an injected clock."""

from __future__ import annotations

import random

import numpy as np
import pytest

from inspector.config.batching import BatchingConfig
from inspector.core.records import Frame
from inspector.daemon.batching import Batcher

IMAGE = np.zeros((4, 4, 3), np.uint8)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def frame(seq: int, captured: float, camera: str = "cam1") -> Frame:
    return Frame(camera=camera, seq=seq, captured_at=captured, monotonic_at=captured, image=IMAGE)


def make(
    max_batch: int = 4, max_wait_ms: float = 50.0, deadline_ms: float = 500.0
) -> tuple[Batcher, FakeClock]:
    clock = FakeClock()
    cfg = BatchingConfig(max_batch=max_batch, max_wait_ms=max_wait_ms, deadline_ms=deadline_ms)
    return Batcher(cfg, clock), clock


def test_batch_is_sent_as_soon_as_max_batch_frames_wait() -> None:
    batcher, clock = make(max_batch=3)
    batcher.add([frame(0, clock.now), frame(1, clock.now)])
    assert batcher.take_batch() == []
    batcher.add([frame(2, clock.now), frame(3, clock.now)])
    assert [f.seq for f in batcher.take_batch()] == [0, 1, 2]
    assert len(batcher) == 1


def test_partial_batch_is_sent_only_once_oldest_frame_waited_max_wait_ms() -> None:
    batcher, clock = make(max_batch=8, max_wait_ms=50.0)
    batcher.add([frame(0, clock.now)])
    clock.advance(0.030)
    batcher.add([frame(1, clock.now)])
    assert batcher.take_batch() == []
    assert batcher.time_until_due() == pytest.approx(0.020)
    clock.advance(0.021)
    assert batcher.time_until_due() == 0.0
    assert [f.seq for f in batcher.take_batch()] == [0, 1]
    assert batcher.time_until_due() is None


def test_wait_counts_from_capture_so_an_old_frame_is_due_on_arrival() -> None:
    batcher, clock = make(max_batch=8, max_wait_ms=50.0)
    batcher.add([frame(0, clock.now - 0.2)])
    assert batcher.is_due()
    assert len(batcher.take_batch()) == 1


def test_frames_past_deadline_are_split_off_for_timeout_verdicts() -> None:
    batcher, clock = make(max_batch=8, max_wait_ms=50.0, deadline_ms=500.0)
    batcher.add([frame(0, clock.now - 0.6), frame(1, clock.now - 0.4), frame(0, clock.now - 0.7, "cam2")])
    expired = batcher.take_expired()
    assert [(f.camera, f.seq) for f in expired] == [("cam1", 0), ("cam2", 0)]
    assert [f.seq for f in batcher.take_batch()] == [1]
    assert batcher.take_expired() == []


def test_flush_sends_whatever_waits() -> None:
    batcher, clock = make(max_batch=8, max_wait_ms=1000.0, deadline_ms=5000.0)
    batcher.add([frame(0, clock.now)])
    assert batcher.take_batch() == []
    assert [f.seq for f in batcher.take_batch(flush=True)] == [0]
    assert batcher.take_batch(flush=True) == []


def test_full_batcher_evicts_oldest_and_returns_it_for_accounting() -> None:
    clock = FakeClock()
    batcher = Batcher(BatchingConfig(max_batch=2, max_wait_ms=10.0, deadline_ms=100.0), clock, capacity=3)
    assert batcher.room == 3
    evicted = batcher.add([frame(i, clock.now) for i in range(5)])
    assert [f.seq for f in evicted] == [0, 1]
    assert batcher.room == 0
    assert [f.seq for f in batcher.drain()] == [2, 3, 4]


def test_capacity_below_max_batch_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        Batcher(BatchingConfig(max_batch=8), FakeClock(), capacity=4)


def test_every_added_frame_leaves_exactly_once_whatever_the_timing() -> None:
    rng = random.Random(5)
    batcher, clock = make(max_batch=4, max_wait_ms=20.0, deadline_ms=60.0)
    added: list[tuple[str, int]] = []
    left: list[tuple[str, int]] = []
    for step in range(500):
        if rng.random() < 0.6 and batcher.room:
            cam = rng.choice(["a", "b"])
            f = frame(step, clock.now - rng.uniform(0.0, 0.08), cam)
            added.append((cam, step))
            left += [(e.camera, e.seq) for e in batcher.add([f])]
        clock.advance(rng.uniform(0.0, 0.015))
        left += [(e.camera, e.seq) for e in batcher.take_expired()]
        batch = batcher.take_batch()
        assert len(batch) <= 4
        left += [(b.camera, b.seq) for b in batch]
    left += [(f.camera, f.seq) for f in batcher.drain()]
    assert sorted(left) == sorted(added)
    assert len(set(left)) == len(left)


def test_by_default_a_frame_leaves_at_once_and_frames_that_arrived_meanwhile_leave_together() -> None:
    clock = FakeClock()
    batcher = Batcher(BatchingConfig(max_batch=3), clock)
    batcher.add([frame(1, clock.now)])
    assert [f.seq for f in batcher.take_batch()] == [1]  # no linger beside an idle worker
    clock.advance(0.3)  # the worker scored that frame; four more arrived meanwhile
    batcher.add([frame(s, clock.now - 0.1) for s in (2, 3, 4, 5)])
    assert [f.seq for f in batcher.take_batch()] == [2, 3, 4]
    assert [f.seq for f in batcher.take_batch()] == [5]
    assert batcher.take_batch() == []


def test_deadline_must_exceed_max_wait() -> None:
    with pytest.raises(ValueError, match="deadline_ms"):
        BatchingConfig(max_wait_ms=100.0, deadline_ms=50.0)

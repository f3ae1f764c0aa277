"""Frame pipeline of the daemon: capture -> batcher -> model worker -> bus, with a ledger accounting every frame."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog
import zmq

from inspector.batching import Batcher
from inspector.capture import Frame
from inspector.logs import frame_logger
from inspector.metrics import InspectorMetrics
from inspector.publisher import Publisher, PublisherError
from inspector.worker import FrameOutcome, ModelWorker

MS_PER_S = 1000.0
POLL_INTERVAL_S = 0.1  # longest wait for frames before re-checking stop and deadlines
DROP_BATCHER_FULL = "batcher_full"
DROP_PUBLISH_FAILED = "publish_failed"
DROP_SHUTDOWN_TIMEOUT = "shutdown_timeout"
DROP_PIPELINE_FAILED = "pipeline_failed"


class FrameSource(Protocol):
    """Where frames come from (``inspector.capture.CaptureManager`` satisfies it)."""

    def get_frames(self, max_items: int, timeout_s: float) -> list[Frame]:
        """Up to ``max_items`` frames, waiting up to ``timeout_s`` for the first."""
        ...


@dataclass(frozen=True)
class CameraTally:
    """Ledger counts of one camera: accepted == published + dropped + outstanding."""

    accepted: int
    published: dict[str, int]
    dropped: dict[str, int]
    outstanding: int
    last_seq: int | None

    @property
    def published_total(self) -> int:
        """Verdicts published, all verdicts together."""
        return sum(self.published.values())


class FrameLedger:
    """Accounts for every accepted frame: it ends in exactly one published verdict or one counted drop.

    Thread-safe. After :meth:`abandon` the ledger is closed: frames still outstanding are counted as
    dropped, and a late attempt to publish one of them is refused, so nothing is ever counted twice.
    """

    def __init__(self, metrics: InspectorMetrics | None = None) -> None:
        """Create an empty, open ledger; drops are also counted in ``inspector_frames_dropped_total``."""
        self._metrics = metrics
        self._lock = threading.Lock()
        self._outstanding: dict[tuple[str, int], Frame] = {}
        self._accepted: dict[str, int] = {}
        self._published: dict[str, dict[str, int]] = {}
        self._dropped: dict[str, dict[str, int]] = {}
        self._last_seq: dict[str, int] = {}
        self._closed = False

    def accept(self, frame: Frame) -> bool:
        """Take responsibility for a frame. False (and counted dropped) when the ledger is closed."""
        with self._lock:
            self._accepted[frame.camera] = self._accepted.get(frame.camera, 0) + 1
            if self._closed:
                self._count_drop(frame.camera, DROP_SHUTDOWN_TIMEOUT)
                return False
            self._outstanding[(frame.camera, frame.seq)] = frame
            return True

    def claim(self, frame: Frame) -> bool:
        """Claim an outstanding frame for publishing; False when it was abandoned (then do not publish)."""
        with self._lock:
            return self._outstanding.pop((frame.camera, frame.seq), None) is not None

    def published(self, frame: Frame, verdict: str) -> None:
        """Record that a claimed frame's verdict was handed to the bus."""
        with self._lock:
            counts = self._published.setdefault(frame.camera, {})
            counts[verdict] = counts.get(verdict, 0) + 1
            self._last_seq[frame.camera] = max(frame.seq, self._last_seq.get(frame.camera, -1))

    def drop(self, frame: Frame, reason: str) -> bool:
        """Count an outstanding frame as dropped for ``reason``; False (not counted) if it was not outstanding."""
        with self._lock:
            if self._outstanding.pop((frame.camera, frame.seq), None) is None:
                return False
            self._count_drop(frame.camera, reason)
            return True

    def drop_claimed(self, frame: Frame, reason: str) -> None:
        """Count a frame claimed by :meth:`claim` (e.g. the bus refused it) as dropped for ``reason``."""
        with self._lock:
            self._count_drop(frame.camera, reason)

    def _count_drop(self, camera: str, reason: str) -> None:
        counts = self._dropped.setdefault(camera, {})
        counts[reason] = counts.get(reason, 0) + 1
        if self._metrics is not None:
            self._metrics.frames_dropped.labels(camera=camera, reason=reason).inc()

    def abandon(self, reason: str) -> list[Frame]:
        """Close the ledger and count every outstanding frame as dropped for ``reason``; return them."""
        with self._lock:
            self._closed = True
            frames = sorted(self._outstanding.values(), key=lambda f: (f.camera, f.seq))
            self._outstanding.clear()
            for frame in frames:
                self._count_drop(frame.camera, reason)
            return frames

    @property
    def outstanding(self) -> int:
        """Frames accepted but not yet published or dropped."""
        with self._lock:
            return len(self._outstanding)

    def tally(self) -> dict[str, CameraTally]:
        """Counts per camera."""
        with self._lock:
            cameras = sorted({*self._accepted, *self._published, *self._dropped})
            waiting = [cam for cam, _ in self._outstanding]
            return {
                cam: CameraTally(
                    accepted=self._accepted.get(cam, 0),
                    published=dict(self._published.get(cam, {})),
                    dropped=dict(self._dropped.get(cam, {})),
                    outstanding=waiting.count(cam),
                    last_seq=self._last_seq.get(cam),
                )
                for cam in cameras
            }


class Pipeline:
    """The daemon's frame loop (run it in one thread): pull frames, batch, score, publish.

    Expired frames (past ``deadline_ms``) get TIMEOUT verdicts; scoring failures get ERROR verdicts.
    The loop ends once :attr:`input_closed` is set and the source and batcher are empty.
    """

    def __init__(
        self,
        source: FrameSource,
        batcher: Batcher,
        worker: ModelWorker,
        publisher: Publisher,
        ledger: FrameLedger,
        metrics: InspectorMetrics | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Wire the stages together (all injected; the clock is the batcher's monotonic clock)."""
        self._source = source
        self._batcher = batcher
        self._worker = worker
        self._publisher = publisher
        self._ledger = ledger
        self._metrics = metrics
        self._clock = clock
        self.input_closed = threading.Event()
        self.draining = threading.Event()
        self._progress_at = clock()
        self._log = structlog.stdlib.get_logger(__name__)

    @property
    def queued(self) -> int:
        """Frames waiting in the batcher."""
        return len(self._batcher)

    def stalled_for_s(self) -> float:
        """Seconds since the loop last completed a step (grows while a batch is being scored)."""
        return self._clock() - self._progress_at

    def run(self) -> None:
        """Loop until the input is closed and everything accepted is published or dropped."""
        while True:
            self._progress_at = self._clock()
            closed = self.input_closed.is_set()
            draining = self.draining.is_set() or closed
            frames = self._pull(draining)
            self.step(flush=draining)
            if closed and not frames and len(self._batcher) == 0:
                return
            if draining and not frames and len(self._batcher) == 0:
                self.input_closed.wait(POLL_INTERVAL_S)

    def _pull(self, draining: bool) -> list[Frame]:
        room = self._batcher.room
        if room <= 0:
            return []
        wait = 0.0 if draining else self._batcher.time_until_due()
        frames = self._source.get_frames(
            room, POLL_INTERVAL_S if wait is None else min(wait, POLL_INTERVAL_S)
        )
        accepted = [f for f in frames if self._ledger.accept(f)]
        for frame in self._batcher.add(accepted):
            self._ledger.drop(frame, DROP_BATCHER_FULL)
            frame_logger(self._log, frame.camera, frame.seq).warning(
                "frame_dropped", reason=DROP_BATCHER_FULL
            )
        return frames

    def step(self, flush: bool = False) -> int:
        """Publish TIMEOUT for expired frames, then score and publish one batch if due; return frames done."""
        done = 0
        for frame in self._batcher.take_expired():
            waited_ms = self._batcher.age_s(frame) * MS_PER_S
            reason = f"deadline_ms exceeded: waited {waited_ms:.0f} ms since capture before scoring"
            frame_logger(self._log, frame.camera, frame.seq).warning("frame_timeout", waited_ms=waited_ms)
            self.publish(self._worker.failure(frame, "TIMEOUT", reason))
            done += 1
        batch = self._batcher.take_batch(flush)
        if batch:
            result = self._worker.score(batch)
            if self._metrics is not None:
                self._metrics.record_batch(len(batch), result.stage_seconds)
            for outcome in result.outcomes:
                self.publish(outcome)
            done += len(batch)
        return done

    def publish(self, outcome: FrameOutcome) -> bool:
        """Publish one outcome exactly once; False when it was abandoned or the bus refused it (counted)."""
        frame = outcome.frame
        if not self._ledger.claim(frame):
            return False
        end_to_end_ms = max(0.0, (self._clock() - frame.monotonic_at) * MS_PER_S)
        header = outcome.header.model_copy(
            update={"latency_ms": {**outcome.header.latency_ms, "end_to_end": end_to_end_ms}}
        )
        try:
            self._publisher.publish_verdict(header, outcome.mask)
        except (PublisherError, ValueError, zmq.ZMQError) as exc:
            self._ledger.drop_claimed(frame, DROP_PUBLISH_FAILED)
            frame_logger(self._log, frame.camera, frame.seq).error("publish_failed", error=str(exc))
            return False
        self._ledger.published(frame, header.verdict)
        if self._metrics is not None:
            self._metrics.record_verdict(header, observe_stages=False)
        return True

    def abandon_queued(self, reason: str) -> Sequence[Frame]:
        """Drop what waits in the batcher (only when the loop is no longer running)."""
        return [frame for frame in self._batcher.drain() if self._ledger.drop(frame, reason)]

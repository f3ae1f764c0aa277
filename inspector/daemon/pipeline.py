"""Frame pipeline of the daemon: capture -> batcher -> model worker -> sinks, every frame in the ledger."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import structlog

from inspector.core.records import Frame, Outcome
from inspector.daemon.batching import Batcher
from inspector.daemon.ledger import FrameLedger
from inspector.daemon.sinks import RecordSink, Sink, SinkError
from inspector.daemon.worker import ModelWorker
from inspector.ops.logs import frame_logger
from inspector.ops.metrics import InspectorMetrics

MS_PER_S = 1000.0
POLL_INTERVAL_S = 0.1  # longest wait for frames before re-checking stop and deadlines
DROP_BATCHER_FULL = "batcher_full"
DROP_PUBLISH_FAILED = "publish_failed"
DROP_PIPELINE_FAILED = "pipeline_failed"


class FrameSource(Protocol):
    """Where frames come from (``inspector.capture.manager.CaptureManager`` satisfies it)."""

    def get_frames(self, max_items: int, timeout_s: float) -> list[Frame]:
        """Up to ``max_items`` frames, waiting up to ``timeout_s`` for the first."""
        ...


class Pipeline:
    """The daemon's frame loop (run it in one thread): pull frames, batch, score, hand outcomes to the sinks.

    Expired frames (past ``deadline_ms``) get TIMEOUT verdicts; scoring failures get ERROR verdicts.
    The bus is the sink of record: a frame counts as published once the bus took its verdict, and as
    dropped (``publish_failed``) when it refused it. The other sinks (archive, live view...) get every
    published outcome after the bus; their failures are logged and counted, never lose a verdict.
    The loop ends once :attr:`input_closed` is set and the source and batcher are empty. With a ``gate``, it
    takes no frame before the gate opens (the daemon opens it right after its first ``ready`` heartbeat, so no
    verdict precedes it) or a stop begins.
    """

    def __init__(
        self,
        source: FrameSource,
        batcher: Batcher,
        worker: ModelWorker,
        bus: RecordSink,
        ledger: FrameLedger,
        metrics: InspectorMetrics | None,
        sinks: Sequence[Sink] = (),
        clock: Callable[[], float] = time.monotonic,
        gate: threading.Event | None = None,
    ) -> None:
        """Wire the stages together (all injected; the clock is the batcher's monotonic clock)."""
        self._source = source
        self._batcher = batcher
        self._worker = worker
        self._bus = bus
        self._sinks = tuple(sinks)
        self._ledger = ledger
        self._metrics = metrics
        self._clock = clock
        self.input_closed = threading.Event()
        self._gate = gate
        self.draining = threading.Event()
        self.retired = (
            threading.Event()
        )  # replaced by another pipeline: its thread ends after its current step
        self._in_flight: tuple[Frame, ...] = ()
        self._progress_at = clock()
        self._log = structlog.stdlib.get_logger(__name__)

    @property
    def worker(self) -> ModelWorker:
        """The model worker this pipeline scores with."""
        return self._worker

    @property
    def queued(self) -> int:
        """Frames waiting in the batcher."""
        return len(self._batcher)

    def queued_by_camera(self) -> dict[str, int]:
        """Frames waiting in the batcher, per camera."""
        return self._batcher.depth_by_camera()

    def stalled_for_s(self) -> float:
        """Seconds since the loop last completed a step (grows while a batch is being scored)."""
        return self._clock() - self._progress_at

    def in_flight(self) -> tuple[Frame, ...]:
        """The frames of the batch being scored now (empty between batches)."""
        return self._in_flight

    def run(self) -> None:
        """Loop until the input is closed and everything accepted is published or dropped, or until retired."""
        self._wait_for_gate()
        while not self.retired.is_set():
            self._progress_at = self._clock()
            closed = self.input_closed.is_set()
            draining = self.draining.is_set() or closed
            frames = self._pull(draining)
            self.step(flush=draining)
            if closed and not frames and len(self._batcher) == 0:
                return
            if draining and not frames and len(self._batcher) == 0:
                self.input_closed.wait(POLL_INTERVAL_S)

    def _wait_for_gate(self) -> None:
        """Wait until the gate opens, or a stop or a retirement makes waiting pointless."""
        gate = self._gate
        while gate is not None and not gate.wait(POLL_INTERVAL_S):
            self._progress_at = self._clock()  # waiting for ready is not a stall
            if self.retired.is_set() or self.draining.is_set() or self.input_closed.is_set():
                return

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
            self._in_flight = tuple(batch)
            try:
                result = self._worker.score(batch)
            finally:
                self._in_flight = ()
            if self._metrics is not None:
                self._metrics.record_batch(len(batch))
            for outcome in result.outcomes:
                self.publish(outcome)
            done += len(batch)
        return done

    def publish(self, outcome: Outcome) -> bool:
        """Deliver one outcome exactly once; False when it was abandoned or the bus refused it (counted)."""
        frame = outcome.frame
        if not self._ledger.claim(frame):
            return False
        try:
            try:
                outcome = self._bus.deliver(outcome)
            except ValueError as exc:  # not encodable: an ERROR verdict in its place, never a lost frame
                frame_logger(self._log, frame.camera, frame.seq).error(
                    "verdict_encoding_failed", error=str(exc)
                )
                outcome = self._worker.failure(frame, "ERROR", f"result not publishable: {exc}")
                outcome = self._bus.deliver(outcome)
        except (SinkError, ValueError) as exc:
            self._ledger.drop_claimed(frame, DROP_PUBLISH_FAILED)
            frame_logger(self._log, frame.camera, frame.seq).error("publish_failed", error=str(exc))
            return False
        self._ledger.published(frame, outcome.verdict)
        for sink in self._sinks:
            self._deliver_to(sink, outcome)
        return True

    def _deliver_to(self, sink: Sink, outcome: Outcome) -> None:
        try:
            sink.deliver(outcome)
        except Exception as exc:  # noqa: BLE001 - an auxiliary output must never stop inspection
            frame_logger(self._log, outcome.camera, outcome.seq).error(
                "sink_failed", sink=sink.name, error=repr(exc)
            )
            if self._metrics is not None:
                self._metrics.sink_errors.labels(sink=sink.name).inc()

    def abandon_queued(self, reason: str) -> Sequence[Frame]:
        """Drop what waits in the batcher (only when the loop is no longer running)."""
        return [frame for frame in self._batcher.drain() if self._ledger.drop(frame, reason)]

"""A sink that does its slow work on its own thread, behind a bounded queue that drops (counted) when full."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

import structlog

from inspector.core.records import Outcome
from inspector.ops.logs import LogThrottle, frame_logger
from inspector.ops.output_metrics import SINK_DROP_QUEUE_FULL, SINK_DROP_SHUTDOWN, OutputMetrics

IDLE_INTERVAL_S = 1.0  # how often the idle hook runs while nothing arrives
JOIN_AFTER_ABANDON_S = 1.0  # after the flush bound: time for the thread to finish the item in hand
DROP_LOG_INTERVAL_S = 10.0  # at most one log line per drop reason this often


class QueuedSink:
    """Runs ``handle(outcome)`` on a thread of its own; :meth:`deliver` never blocks.

    ``deliver`` takes an outcome only when ``wants(outcome)``; a full queue drops it and counts
    ``inspector_sink_dropped_total{sink, reason="queue_full"}``. An exception from ``handle`` is logged and
    counted in ``inspector_sink_errors_total`` by the caller's ``on_error``; the thread goes on. ``idle()`` runs
    about every ``IDLE_INTERVAL_S`` while the queue is empty (retention, for instance).
    """

    def __init__(
        self,
        name: str,
        handle: Callable[[Outcome], object],
        queue_size: int,
        metrics: OutputMetrics | None = None,
        wants: Callable[[Outcome], bool] = lambda _outcome: True,
        idle: Callable[[], None] | None = None,
        flush_timeout_s: float = 5.0,
        on_error: Callable[[str], None] | None = None,
        prepare: Callable[[], None] | None = None,
    ) -> None:
        """Prepare the sink; :meth:`start` starts its thread, which runs ``prepare()`` first."""
        self.name = name
        self._handle = handle
        self._wants = wants
        self._idle = idle
        self._prepare = prepare
        self._metrics = metrics
        self._on_error = on_error
        self._flush_timeout_s = flush_timeout_s
        self._queue: queue.Queue[Outcome] = queue.Queue(maxsize=queue_size)
        self._stopping = threading.Event()
        self._abandon = threading.Event()
        self._thread: threading.Thread | None = None
        self._log = structlog.stdlib.get_logger(__name__).bind(sink=name)
        self._throttle = LogThrottle(DROP_LOG_INTERVAL_S)
        if metrics is not None:
            metrics.init_sink(name)

    def start(self) -> None:
        """Start the worker thread."""
        self._thread = threading.Thread(target=self._run, name=f"sink-{self.name}", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        """Outcomes waiting."""
        return self._queue.qsize()

    def deliver(self, outcome: Outcome) -> None:
        """Queue the outcome if this sink wants it; drop it (counted) when the queue is full or closing."""
        if not self._wants(outcome):
            return
        if self._stopping.is_set():
            self._drop(outcome, SINK_DROP_SHUTDOWN)
            return
        try:
            self._queue.put_nowait(outcome)
        except queue.Full:
            self._drop(outcome, SINK_DROP_QUEUE_FULL)

    def update_gauges(self) -> None:
        """Export the queue's depth."""
        if self._metrics is not None:
            self._metrics.sink_queue_depth.labels(sink=self.name).set(self.depth)

    def close(self) -> None:
        """Finish what is queued within ``flush_timeout_s``; count what is left as dropped (shutdown)."""
        self._stopping.set()
        thread = self._thread
        if thread is not None:
            thread.join(self._flush_timeout_s)
            if thread.is_alive():
                self._abandon.set()
                thread.join(JOIN_AFTER_ABANDON_S)
        while True:  # the thread is gone or stuck in one item: whatever is left is dropped here, once
            try:
                self._drop(self._queue.get_nowait(), SINK_DROP_SHUTDOWN)
            except queue.Empty:
                break
        self.update_gauges()

    def _drop(self, outcome: Outcome, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.sink_dropped.labels(sink=self.name, reason=reason).inc()
        held = self._throttle.allow(reason)
        if held is not None:
            frame_logger(self._log, outcome.camera, outcome.seq).warning(
                "sink_dropped", reason=reason, similar_lines_held_back=held
            )

    def _run(self) -> None:
        if self._prepare is not None:
            self._run_hook(self._prepare, "sink_prepare_failed")
        last_idle = time.monotonic()
        while True:
            try:
                outcome = self._queue.get(timeout=IDLE_INTERVAL_S)
            except queue.Empty:
                if self._stopping.is_set():
                    return
                self._run_idle()
                last_idle = time.monotonic()
                continue
            if self._abandon.is_set():
                self._drop(outcome, SINK_DROP_SHUTDOWN)
                continue
            self._run_handle(outcome)
            if time.monotonic() - last_idle >= IDLE_INTERVAL_S:  # a busy queue still gets its idle work
                self._run_idle()
                last_idle = time.monotonic()

    def _run_handle(self, outcome: Outcome) -> None:
        try:
            self._handle(outcome)
        except Exception as exc:  # noqa: BLE001 - an output's failure never stops its thread or inspection
            frame_logger(self._log, outcome.camera, outcome.seq).error("sink_failed", error=repr(exc))
            if self._on_error is not None:
                self._on_error(self.name)

    def _run_idle(self) -> None:
        if self._idle is not None:
            self._run_hook(self._idle, "sink_idle_failed")

    def _run_hook(self, hook: Callable[[], None], event: str) -> None:
        try:
            hook()
        except Exception as exc:  # noqa: BLE001 - as above
            self._log.error(event, error=repr(exc))
            if self._on_error is not None:
                self._on_error(self.name)

"""Supervision of the model worker: a pipeline stuck past ``stall_timeout_s`` is replaced, within a budget.

A model call cannot be interrupted, so a stuck worker is not killed: its pipeline is retired (its thread ends
whenever the call returns; its late results are refused by the ledger), the frames it held get ``TIMEOUT``
verdicts at once, and a new pipeline with a new worker takes over the same source, batcher and sinks. Each
replacement is charged to a :class:`~inspector.core.budget.RestartBudget`; past it the daemon exits non-zero.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

import structlog

from inspector.core.budget import RestartBudget
from inspector.daemon.pipeline import Pipeline
from inspector.ops.metrics import InspectorMetrics

STALL_REASON = "model worker stalled: no progress for {stalled:.1f} s (worker.stall_timeout_s={limit:g})"
REPLACE_GRACE_S = (
    3.0  # a stuck worker is replaced this long after the watchdog pings stopped (systemd sees it)
)
WORKER = "worker"


class WorkerSupervisor:
    """Watches the running pipeline; call :meth:`check` about once a second from the supervising thread.

    Args:
        first: the pipeline running now.
        make_pipeline: builds a replacement pipeline (a new worker on the same source, batcher and sinks).
        start: runs a pipeline on a thread of its own and returns that thread.
        stall_timeout_s: a batch scored longer than this counts as a stuck worker (the watchdog pings stop);
            it is replaced ``REPLACE_GRACE_S`` later.
        budget: replacements allowed (``[supervision]``).
        metrics: restarts and exhausted budgets are counted here.
        monotonic: clock of the budget.
    """

    def __init__(
        self,
        first: Pipeline,
        make_pipeline: Callable[[], Pipeline],
        start: Callable[[Pipeline], threading.Thread],
        stall_timeout_s: float,
        budget: RestartBudget,
        metrics: InspectorMetrics | None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pipeline = first
        self._make = make_pipeline
        self._start = start
        self._stall_timeout_s = stall_timeout_s
        self._budget = budget
        self._metrics = metrics
        self._monotonic = monotonic
        self.retired: list[tuple[Pipeline, threading.Thread | None]] = []
        self.exhausted: str | None = None
        self._log = structlog.stdlib.get_logger(__name__)

    def check(self, thread: threading.Thread | None) -> Pipeline | None:
        """Replace the pipeline when its worker is stuck; return the new one (None: nothing changed).

        Args:
            thread: the current pipeline's thread (kept so a stuck call is still seen at exit).
        """
        old = self.pipeline
        stalled = old.stalled_for_s()
        frames = old.in_flight()
        if self.exhausted is not None or stalled < self._stall_timeout_s + REPLACE_GRACE_S or not frames:
            return None
        old.retired.set()
        self.retired.append((old, thread))
        reason = STALL_REASON.format(stalled=stalled, limit=self._stall_timeout_s)
        self._log.error("worker_stalled", stalled_s=round(stalled, 1), in_flight=len(frames))
        for frame in frames:
            old.publish(old.worker.failure(frame, "TIMEOUT", reason))
        if self._metrics is not None:
            self._metrics.restarts.labels(kind=WORKER, name=WORKER).inc()
        if not self._budget.record(self._monotonic()):
            self.exhausted = f"model worker: replaced more than {self._budget.describe()} ({reason})"
            self._log.critical("worker_restart_budget_exhausted", budget=self._budget.describe())
            if self._metrics is not None:
                self._metrics.restart_budget_exhausted.labels(kind=WORKER, name=WORKER).inc()
            return None
        self.pipeline = self._make()
        self._start(self.pipeline)
        self._log.warning("worker_replaced", replacements=self._budget.total)
        return self.pipeline

    def stuck_alive(self) -> bool:
        """True while a retired pipeline's thread is still inside its model call."""
        return any(t is not None and t.is_alive() for _, t in self.retired)


FAULT_ENV = "FAULT_INJECT_WORKER_STALL"  # "AFTER:SECONDS:TIMES": for the fault-injection tests only


def stall_injector(env: Mapping[str, str]) -> Callable[[], None] | None:
    """A hook that makes the model worker stall, from ``FAULT_INJECT_WORKER_STALL`` (None when it is unset).

    ``AFTER:SECONDS:TIMES``: after ``AFTER`` batches, the next ``TIMES`` batches each sleep ``SECONDS``
    before scoring, as a worker stuck in a model call would. Used by ``pytest -m faults`` to drive a real
    daemon through a worker stall; never set in production.

    Raises:
        ValueError: the variable is set but not three numbers.
    """
    raw = env.get(FAULT_ENV, "")
    if not raw:
        return None
    try:
        after_s, seconds_s, times_s = raw.split(":")
        after, seconds, times = int(after_s), float(seconds_s), int(times_s)
    except ValueError:
        raise ValueError(f"{FAULT_ENV}={raw!r}: expected AFTER:SECONDS:TIMES, e.g. 3:60:1") from None
    lock = threading.Lock()
    counts = {"batches": 0}

    def hook() -> None:
        with lock:
            counts["batches"] += 1
            n = counts["batches"]
        if after < n <= after + times:
            structlog.stdlib.get_logger(__name__).warning("fault_injected_worker_stall", seconds=seconds)
            time.sleep(seconds)

    return hook

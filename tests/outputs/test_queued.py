"""Tests for inspector.outputs.queued: a sink with its own thread and bounded queue, drops counted by reason."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry

from inspector.core.records import Outcome
from inspector.ops.output_metrics import OutputMetrics
from inspector.outputs.queued import QueuedSink
from tests.support import ScoredLine, wait_until

SHORT_FLUSH_S = 0.2


def dropped(registry: CollectorRegistry, reason: str) -> float:
    return (
        registry.get_sample_value("inspector_sink_dropped_total", {"sink": "test", "reason": reason}) or 0.0
    )


class Gate:
    """A handler that records outcomes and blocks on an event, like a slow disk."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.started = threading.Event()
        self.done: list[Outcome] = []

    def __call__(self, outcome: Outcome) -> None:
        self.started.set()
        self.open.wait()
        self.done.append(outcome)


def test_deliver_never_blocks_a_full_queue_drops_and_counts_and_the_rest_is_handled(
    scored_line: ScoredLine,
) -> None:
    registry = CollectorRegistry()
    gate = Gate()
    sink = QueuedSink("test", gate, queue_size=2, metrics=OutputMetrics(registry))
    sink.start()
    first, *rest = scored_line.outcomes[:5]
    sink.deliver(first)
    wait_until(gate.started.is_set, "the handler to take the first outcome")
    for outcome in rest:  # one in the handler, two fit in the queue, two are dropped
        sink.deliver(outcome)
    assert dropped(registry, "queue_full") == 2
    gate.open.set()
    wait_until(lambda: len(gate.done) == 3, "the queued outcomes to be handled")
    assert gate.done == [first, *rest[:2]]
    sink.close()
    assert dropped(registry, "shutdown") == 0


def test_close_waits_its_bound_then_counts_what_is_left_as_shutdown_drops(scored_line: ScoredLine) -> None:
    registry = CollectorRegistry()
    gate = Gate()
    sink = QueuedSink(
        "test", gate, queue_size=8, metrics=OutputMetrics(registry), flush_timeout_s=SHORT_FLUSH_S
    )
    sink.start()
    sink.deliver(scored_line.outcomes[0])
    wait_until(gate.started.is_set, "the handler to take the first outcome")
    for outcome in scored_line.outcomes[1:4]:
        sink.deliver(outcome)
    sink.close()  # the handler is stuck: three outcomes never get written
    assert dropped(registry, "shutdown") == 3
    sink.deliver(scored_line.outcomes[4])  # after close: dropped, never queued
    assert dropped(registry, "shutdown") == 4
    gate.open.set()


def test_a_failing_handler_is_reported_and_the_thread_goes_on(scored_line: ScoredLine) -> None:
    done: list[int] = []
    errors: list[str] = []

    def handle(outcome: Outcome) -> None:
        if outcome.seq == 0:
            raise OSError("disk on fire")
        done.append(outcome.seq)

    sink = QueuedSink("test", handle, queue_size=8, on_error=errors.append, wants=lambda o: o.seq < 3)
    sink.start()
    for outcome in scored_line.outcomes:
        sink.deliver(outcome)
    sink.close()
    assert errors == ["test"] and done == [1, 2]  # seq 3.. were not wanted

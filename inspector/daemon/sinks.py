"""Where outcomes go after scoring: the ``Sink`` protocol, and the bus as the sink of record."""

from __future__ import annotations

import dataclasses
from typing import Protocol

import zmq

from inspector.bus.publisher import Publisher, PublisherError
from inspector.core.records import Outcome
from inspector.ops.metrics import InspectorMetrics


class SinkError(RuntimeError):
    """A sink refused an outcome (the bus is closed, a disk is full...); the message says why."""


class Sink(Protocol):
    """An output of the pipeline. The pipeline calls :meth:`deliver` once per outcome, from its own thread.

    A sink must not block the pipeline: one that does slow work (disk, network) queues the outcome in a
    bounded queue of its own and counts what it has to drop.
    """

    name: str

    def deliver(self, outcome: Outcome) -> None:
        """Take one outcome.

        Raises:
            SinkError: the outcome was not taken.
        """
        ...

    def close(self) -> None:
        """Finish (flush what is queued, within the sink's own bound) and release resources."""
        ...


class RecordSink(Protocol):
    """The sink of record: like :class:`Sink`, but it returns the outcome as recorded (stamped with what it sent)."""

    name: str

    def deliver(self, outcome: Outcome) -> Outcome:
        """Take one outcome; return it with ``published`` set to what went out.

        Raises:
            SinkError: the outcome was not taken.
            ValueError: the outcome cannot be recorded (nothing was sent).
        """
        ...


class BusSink:
    """The verdict bus: a frame is accounted as delivered once its verdict was handed to ZeroMQ."""

    name = "bus"

    def __init__(self, publisher: Publisher, metrics: InspectorMetrics | None = None) -> None:
        """Publish through ``publisher``; count each published verdict in ``metrics``."""
        self._publisher = publisher
        self._metrics = metrics

    def deliver(self, outcome: Outcome) -> Outcome:
        """Publish the outcome's verdict.

        Returns:
            The outcome with ``published`` set to the header JSON as sent (what the other sinks store).

        Raises:
            SinkError: the publisher is closed or unbound.
            ValueError: the outcome cannot be put on the wire (nothing was sent).
        """
        try:
            header = self._publisher.publish(outcome)
        except (PublisherError, zmq.ZMQError) as exc:
            raise SinkError(str(exc)) from exc
        if self._metrics is not None:
            self._metrics.record_verdict(header.camera, header.verdict, header.score, header.latency_ms)
        return dataclasses.replace(outcome, published=header.model_dump_json())

    def close(self) -> None:
        """The publisher is closed by the daemon after the heartbeats stop; nothing to do here."""

"""Metrics of the parts database's writer: records written, spooled, replayed and dropped, and write time."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PARTS_DROP_REASONS = ("queue_full", "spool_failed", "spool_unreadable", "shutdown", "invalid")
WRITE_SECONDS_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class PartsMetrics:
    """The writer's events as Prometheus series (it satisfies ``inspector.records.writer.WriterEvents``)."""

    def __init__(self, r: CollectorRegistry) -> None:
        """Create and register the series on ``r`` (drop reasons at 0)."""
        self.written_total = Counter(
            "inspector_parts_written_total", "Part records committed to the parts database.", registry=r
        )
        self.spooled_total = Counter(
            "inspector_parts_spooled_total",
            "Part records written to the spool because the database could not take them.",
            registry=r,
        )
        self.replayed_total = Counter(
            "inspector_parts_replayed_total", "Spooled part records committed once the database answered.",
            registry=r,
        )  # fmt: skip
        self.dropped_total = Counter(
            "inspector_parts_dropped_total",
            "Part records lost, by reason (queue_full, spool_failed, spool_unreadable, shutdown, invalid).",
            ["reason"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "inspector_parts_queue_depth", "Part records waiting in memory for the writer.", registry=r
        )
        self.write_seconds = Histogram(
            "inspector_parts_write_seconds", "Time of one batch's transaction.", buckets=WRITE_SECONDS_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.database_up_gauge = Gauge(
            "inspector_parts_database_up", "1 while the parts database takes records, else 0.", registry=r
        )
        for reason in PARTS_DROP_REASONS:
            self.dropped_total.labels(reason=reason)

    def written(self, count: int, seconds: float) -> None:
        """``count`` records committed in ``seconds``."""
        self.written_total.inc(count)
        self.write_seconds.observe(seconds)

    def spooled(self, count: int) -> None:
        """``count`` records spooled."""
        self.spooled_total.inc(count)

    def replayed(self, count: int) -> None:
        """``count`` spooled records committed."""
        self.replayed_total.inc(count)

    def dropped(self, reason: str, count: int) -> None:
        """``count`` records lost for ``reason``."""
        self.dropped_total.labels(reason=reason).inc(count)

    def database_up(self, up: bool) -> None:
        """Whether the database took the last attempt."""
        self.database_up_gauge.set(1 if up else 0)

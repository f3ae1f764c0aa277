"""Metrics of the outputs after the bus: their queues and drops, the defect archive, score drift, MQTT."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Counter, Gauge

from inspector.core.names import VERDICTS
from inspector.ops.mqtt_metrics import MqttMetrics
from inspector.ops.parts_metrics import PartsMetrics

SINK_DROP_QUEUE_FULL = "queue_full"  # the output's own queue was full: the outcome was not taken
SINK_DROP_SHUTDOWN = "shutdown"  # still queued when the output's flush bound ran out at stop
SINK_DROP_REASONS = (SINK_DROP_QUEUE_FULL, SINK_DROP_SHUTDOWN)

ARCHIVE_DISK_FULL = "disk_full"  # ENOSPC, EDQUOT, EFBIG
ARCHIVE_READ_ONLY = "read_only"  # EROFS
ARCHIVE_PERMISSION = "permission_denied"  # EACCES, EPERM
ARCHIVE_IO_ERROR = "io_error"  # any other OSError, or an image OpenCV could not encode
ARCHIVE_SKIP_REASONS = (ARCHIVE_DISK_FULL, ARCHIVE_READ_ONLY, ARCHIVE_PERMISSION, ARCHIVE_IO_ERROR)
ARCHIVE_REMOVED_SIZE = "size"
ARCHIVE_REMOVED_AGE = "age"
ARCHIVE_REMOVED_REASONS = (ARCHIVE_REMOVED_SIZE, ARCHIVE_REMOVED_AGE)


class OutputMetrics:
    """The outputs' metrics on the daemon's registry (created by ``InspectorMetrics``)."""

    def __init__(self, r: CollectorRegistry) -> None:
        """Create and register every output metric on ``r``."""
        self.sink_dropped = Counter(
            "inspector_sink_dropped_total",
            "Outcomes an output after the bus (archive, mqtt, ...) dropped, by reason; the verdict was "
            "published on the bus.",
            ["sink", "reason"],
            registry=r,
        )
        self.sink_queue_depth = Gauge(
            "inspector_sink_queue_depth", "Outcomes waiting in an output's own queue.", ["sink"], registry=r
        )
        self.archive_records = Counter(
            "inspector_archive_records_total", "Records written to the defect archive.", ["camera", "verdict"],
            registry=r,
        )  # fmt: skip
        self.archive_skipped = Counter(
            "inspector_archive_skipped_writes_total",
            "Archive records not written, by reason (disk_full, read_only, permission_denied, io_error).",
            ["camera", "reason"],
            registry=r,
        )
        self.archive_removed = Counter(
            "inspector_archive_removed_total",
            "Archive records removed by retention (size: total size limit, age: age limit).",
            ["reason"],
            registry=r,
        )
        self.archive_bytes = Gauge(
            "inspector_archive_held_bytes", "Bytes held by the archive's records.", registry=r
        )
        self.archive_held = Gauge(
            "inspector_archive_held_records", "Records held by the archive.", registry=r
        )
        self.parts = PartsMetrics(r)
        self.mqtt = MqttMetrics(r)
        self.review_login_failures = Counter(
            "inspector_review_login_failures_total",
            "Failed logins on the review page, by reason (unknown_user, wrong_password, locked_out).",
            ["reason"],
            registry=r,
        )
        for reason in ("unknown_user", "wrong_password", "locked_out"):
            self.review_login_failures.labels(reason=reason)
        self._create_drift_metrics(r)
        for reason in ARCHIVE_REMOVED_REASONS:
            self.archive_removed.labels(reason=reason)

    def _create_drift_metrics(self, r: CollectorRegistry) -> None:
        self.pass_median = Gauge(
            "inspector_pass_score_median",
            "Rolling median of the camera's PASS image scores (NaN until drift.min_pass_scores).",
            ["camera"],
            registry=r,
        )
        self.pass_p99 = Gauge(
            "inspector_pass_score_p99",
            "Rolling 99th percentile of the camera's PASS image scores (NaN until drift.min_pass_scores).",
            ["camera"],
            registry=r,
        )
        self.drift_ratio = Gauge(
            "inspector_pass_score_drift_ratio",
            "Rolling median of PASS scores divided by the median score of the gallery's calibration images: "
            "about 1 while the line looks like the gallery's world (NaN when unknown).",
            ["camera"],
            registry=r,
        )
        self.score_threshold = Gauge(
            "inspector_score_threshold", "Image threshold of the camera's gallery.", ["camera"], registry=r
        )
        self.calibration_median = Gauge(
            "inspector_calibration_score_median",
            "Median image score of the gallery's calibration images (NaN when the gallery does not record it).",
            ["camera"],
            registry=r,
        )

    def init_camera(self, camera: str) -> None:
        """Create a camera's output series (counters at 0, drift gauges NaN) before its first verdict."""
        for verdict in VERDICTS:
            self.archive_records.labels(camera=camera, verdict=verdict)
        for reason in ARCHIVE_SKIP_REASONS:
            self.archive_skipped.labels(camera=camera, reason=reason)
        for gauge in (self.pass_median, self.pass_p99, self.drift_ratio, self.calibration_median):
            gauge.labels(camera=camera).set(math.nan)

    def init_sink(self, sink: str) -> None:
        """Create an output's drop and queue series at 0."""
        for reason in SINK_DROP_REASONS:
            self.sink_dropped.labels(sink=sink, reason=reason)
        self.sink_queue_depth.labels(sink=sink).set(0)

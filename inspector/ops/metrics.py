"""Prometheus metrics of the daemon on an injected CollectorRegistry, and the HTTP endpoint serving them.

Only the parent (daemon) process writes these metrics. Camera child processes never touch the registry
(prometheus-client state is per process and multiprocess mode is not used): their counters live in shared
memory and the parent turns them into counter increments here; their CPU and memory are read from /proc
(``inspector.ops.children``). Labels are bounded sets (camera names, stage names, queue names, verdicts,
drop reasons from a fixed list); no label is ever per frame or per part. Every series a camera will have is
created at 0 when the camera is declared, so ``increase()`` sees the first event.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from inspector.config.metrics import DEFAULT_SCORE_BUCKETS, MetricsConfig
from inspector.core.names import DROP_REASONS, LATENCY_STAGES, QUEUES, VERDICTS
from inspector.ops.children import ChildProcessCollector
from inspector.ops.connections import ConnectionMetrics
from inspector.ops.endpoint import NOT_STARTED, Health, MetricsServer, serve_metrics
from inspector.ops.output_metrics import OutputMetrics

BATCH_SIZE_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64)
STAGE_LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
END_TO_END_BUCKETS_S: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0,
)  # fmt: skip
MS_PER_S = 1000.0
END_TO_END = "end_to_end"


class InspectorMetrics:
    """All daemon metrics, registered on one injected registry.

    The metric objects are public attributes for direct use; the helper methods cover the common updates.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        score_buckets: Sequence[float] = DEFAULT_SCORE_BUCKETS,
        stages: Sequence[str] = LATENCY_STAGES,
        clock: Callable[[], float] = time.time,
        include_process_collector: bool = True,
    ) -> None:
        """Create and register every metric.

        Args:
            registry: the registry served by :func:`start_http_server` (never the global default).
            score_buckets: upper bounds of the anomaly score histogram (``MetricsConfig.score_buckets``).
            stages: stage names observed from ``latency_ms`` (others are ignored, bounding cardinality).
            clock: wall clock for ``inspector_start_time_seconds``.
            include_process_collector: also export ``process_*`` (CPU, memory, fds, start time).
        """
        self.registry = registry
        self._stages = tuple(s for s in stages if s != END_TO_END)
        self._galleries: dict[str, tuple[str, str, str]] = {}
        self._lock = threading.Lock()
        self._ready = False
        self._bus_seen = (0, 0)
        self._create_pipeline_metrics(registry)
        self._create_latency_metrics(registry, score_buckets)
        self._create_state_metrics(registry)
        self._create_line_control_metrics(registry)
        self.outputs = OutputMetrics(registry)
        self.connections = ConnectionMetrics(registry)
        self.children = ChildProcessCollector(registry if include_process_collector else None)
        if include_process_collector:
            ProcessCollector(registry=registry)
        self.start_time.set(clock())
        self.up.set(1)
        self.ready.set(0)

    def _create_pipeline_metrics(self, r: CollectorRegistry) -> None:
        self.frames_captured = Counter(
            "inspector_frames_captured_total", "Frames read from the camera.", ["camera"], registry=r
        )
        self.frames_dropped = Counter(
            "inspector_frames_dropped_total",
            "Frames that got no verdict, by reason (queue_full, batcher_full, shutdown_timeout, ...).",
            ["camera", "reason"],
            registry=r,
        )
        self.frames_scored = Counter(
            "inspector_frames_scored_total", "Frames scored by the model.", ["camera"], registry=r
        )
        self.verdicts = Counter(
            "inspector_verdicts_total", "Verdicts published, by verdict.", ["camera", "verdict"], registry=r
        )
        self.camera_up = Gauge(
            "inspector_camera_up", "1 when the camera delivers frames.", ["camera"], registry=r
        )
        self.camera_reconnects = Counter(
            "inspector_camera_reconnects_total", "Camera reconnect attempts.", ["camera"], registry=r
        )
        self.camera_incomplete_frames = Counter(
            "inspector_camera_incomplete_frames_total",
            "Frames the camera delivered incomplete (lost packets, timeout): ERROR verdicts, never scored.",
            ["camera"],
            registry=r,
        )
        self.camera_lost_packets = Counter(
            "inspector_camera_lost_packets_total",
            "Stream packets lost on the way from a GigE Vision camera (resent ones are not counted).",
            ["camera"],
            registry=r,
        )
        self.frames_unpaired = Counter(
            "inspector_frames_unpaired_total",
            "Frames of a line-triggered camera that no PLC trigger claimed within the pairing window.",
            ["camera"],
            registry=r,
        )
        self.restarts = Counter(
            "inspector_restarts_total", "Supervised restarts: a camera process (hung or dead) or the model "
            "worker (stalled).", ["kind", "name"], registry=r,
        )  # fmt: skip
        self.restart_budget_exhausted = Counter(
            "inspector_restart_budget_exhausted_total", "Restart budgets run out (the daemon then exits 1).",
            ["kind", "name"], registry=r,
        )  # fmt: skip
        self.sink_errors = Counter(
            "inspector_sink_errors_total",
            "Outcomes an auxiliary output (archive, live view...) failed to take; the verdict was published.",
            ["sink"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "inspector_queue_depth",
            "Frames waiting, by queue (capture: the camera's channel; batcher: in front of the model worker).",
            ["queue", "camera"],
            registry=r,
        )
        self.batch_size = Histogram(
            "inspector_batch_size", "Frames per model batch.", buckets=BATCH_SIZE_BUCKETS, registry=r
        )

    def _create_latency_metrics(self, r: CollectorRegistry, score_buckets: Sequence[float]) -> None:
        self.stage_latency = Histogram(
            "inspector_stage_latency_seconds",
            "Time a frame spent per stage: queue (waiting for the worker), the model's stages (its batch's "
            "time), encode (mask encoding).",
            ["camera", "stage"],
            buckets=STAGE_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.end_to_end_latency = Histogram(
            "inspector_end_to_end_latency_seconds",
            "Capture to publish latency.",
            ["camera"],
            buckets=END_TO_END_BUCKETS_S,
            registry=r,
        )
        self.anomaly_score = Histogram(
            "inspector_anomaly_score",
            "Image anomaly scores.",
            ["camera"],
            buckets=tuple(score_buckets),
            registry=r,
        )

    def _create_line_control_metrics(self, r: CollectorRegistry) -> None:
        self.triggers = Counter(
            "inspector_triggers_total",
            "Triggers accepted (each ends in one verdict).",
            ["camera"],
            registry=r,
        )
        self.triggers_rejected = Counter(
            "inspector_triggers_rejected_total",
            "Triggers given no place in a sequence (unknown or free-running camera, no usable part id, backlog "
            "full, a message of several frames).",
            ["reason"],
            registry=r,
        )
        self.triggers_duplicate = Counter(
            "inspector_triggers_duplicate_total",
            "Triggers accepted while another trigger with the same part id still waited on the camera.",
            ["camera"],
            registry=r,
        )
        self.trigger_timeouts = Counter(
            "inspector_trigger_timeouts_total",
            "Triggers no frame answered within trigger_timeout_ms (ERROR verdicts).",
            ["camera"],
            registry=r,
        )
        self.bus_subscriptions_refused = Counter(
            "inspector_bus_subscriptions_refused_total",
            "Bus subscriptions not applied: not a prefix of heartbeat or verdict.<camera> of this daemon.",
            registry=r,
        )
        self.bus_subscribers_dropped = Counter(
            "inspector_bus_subscribers_dropped_total",
            "Bus subscribers disconnected for sending more than bus.max_subscription_bytes of subscriptions, "
            "or beyond bus.max_subscribers.",
            registry=r,
        )
        self.gallery_reloads = Counter(
            "inspector_gallery_reloads_total", "Gallery reloads, by product and result.", ["product", "result"],
            registry=r,
        )  # fmt: skip

    def _create_state_metrics(self, r: CollectorRegistry) -> None:
        self.build_info = Gauge(
            "inspector_build_info", "Build version (value is 1).", ["version"], registry=r
        )
        self.gallery_info = Gauge(
            "inspector_gallery_info",
            "Product and gallery in use per camera (value is 1).",
            ["camera", "product", "gallery_hash", "backbone"],
            registry=r,
        )
        self.worker_last_progress = Gauge(
            "inspector_worker_last_progress_timestamp_seconds",
            "Unix time the model worker last finished a batch.",
            registry=r,
        )
        self.up = Gauge("inspector_up", "1 while the daemon process runs.", registry=r)
        self.ready = Gauge("inspector_ready", "1 when the daemon is ready to score frames.", registry=r)
        self.start_time = Gauge("inspector_start_time_seconds", "Unix time the daemon started.", registry=r)

    def record_bus(self, refused: int, dropped: int) -> None:
        """Bring the bus counters up to the publisher's cumulative counts (they only grow)."""
        with self._lock:
            new_refused, new_dropped = refused - self._bus_seen[0], dropped - self._bus_seen[1]
            self._bus_seen = (max(refused, self._bus_seen[0]), max(dropped, self._bus_seen[1]))
        if new_refused > 0:
            self.bus_subscriptions_refused.inc(new_refused)
        if new_dropped > 0:
            self.bus_subscribers_dropped.inc(new_dropped)

    def set_build_info(self, version: str) -> None:
        """Export ``inspector_build_info{version}`` = 1."""
        self.build_info.labels(version=version).set(1)

    def init_camera(self, camera: str) -> None:
        """Create every series of a camera at 0 so dashboards and ``increase()`` see its first event."""
        self.frames_captured.labels(camera=camera)
        self.frames_scored.labels(camera=camera)
        self.camera_reconnects.labels(camera=camera)
        self.camera_incomplete_frames.labels(camera=camera)
        self.camera_lost_packets.labels(camera=camera)
        self.frames_unpaired.labels(camera=camera)
        self.restarts.labels(kind="camera", name=camera)
        self.camera_up.labels(camera=camera).set(0)
        for verdict in VERDICTS:
            self.verdicts.labels(camera=camera, verdict=verdict)
        self.triggers.labels(camera=camera)
        self.triggers_duplicate.labels(camera=camera)
        self.trigger_timeouts.labels(camera=camera)
        for reason in DROP_REASONS:
            self.frames_dropped.labels(camera=camera, reason=reason)
        for queue in QUEUES:
            self.queue_depth.labels(queue=queue, camera=camera).set(0)
        for stage in self._stages:
            self.stage_latency.labels(camera=camera, stage=stage)
        self.end_to_end_latency.labels(camera=camera)
        self.anomaly_score.labels(camera=camera)
        self.outputs.init_camera(camera)

    def set_gallery(self, camera: str, product: str, gallery_hash: str, backbone: str) -> None:
        """Record the product and gallery a camera uses, removing the series of the ones they replace."""
        current = (product, gallery_hash, backbone)
        with self._lock:
            previous = self._galleries.get(camera)
            if previous is not None and previous != current:
                self.gallery_info.remove(camera, *previous)
            self._galleries[camera] = current
            self.gallery_info.labels(
                camera=camera, product=product, gallery_hash=gallery_hash, backbone=backbone
            ).set(1)

    def set_ready(self, ready: bool) -> None:
        """Set ``inspector_ready`` to 1 (started, until the stop begins) or 0."""
        self._ready = ready
        self.ready.set(1 if ready else 0)

    def is_ready(self) -> bool:
        """What :meth:`set_ready` last said."""
        return self._ready

    def record_batch(self, size: int) -> None:
        """Observe one model batch's size (its stages are observed per verdict, with the camera)."""
        self.batch_size.observe(size)

    def record_verdict(
        self, camera: str, verdict: str, score: float | None, latency_ms: Mapping[str, float]
    ) -> None:
        """Count a published verdict and observe its score and latencies.

        Args:
            camera: the camera.
            verdict: PASS, FAIL, TIMEOUT or ERROR.
            score: the image score (None when not scored).
            latency_ms: milliseconds per stage as published: each stage of ``LATENCY_STAGES`` feeds
                ``inspector_stage_latency_seconds{camera, stage}``, ``end_to_end`` the end-to-end histogram.
        """
        self.verdicts.labels(camera=camera, verdict=verdict).inc()
        if score is not None:
            self.frames_scored.labels(camera=camera).inc()
            self.anomaly_score.labels(camera=camera).observe(score)
        for stage in self._stages:
            if stage in latency_ms:
                self.stage_latency.labels(camera=camera, stage=stage).observe(latency_ms[stage] / MS_PER_S)
        if END_TO_END in latency_ms:
            self.end_to_end_latency.labels(camera=camera).observe(latency_ms[END_TO_END] / MS_PER_S)


def start_http_server(
    config: MetricsConfig,
    registry: CollectorRegistry,
    health: Callable[[], Health] = lambda: NOT_STARTED,
    connections: ConnectionMetrics | None = None,
) -> tuple[MetricsServer, int]:
    """Serve ``/metrics`` (``registry``, without ``_created`` series), ``/healthz`` and ``/livez`` from a thread.

    ``/healthz`` answers 200 while ``health().ready`` and 503 otherwise, ``/livez`` the same for
    ``health().alive``, both with ``health().reason`` as the body; any other path is 404; methods other than GET
    and HEAD are 405. The listener holds what ``config``'s limits allow (connections counted in
    ``connections``). The caller checks ``config.enabled`` and calls ``server.close()`` on shutdown.

    Returns:
        (server, actual port) — the actual port differs from ``config.port`` when it is 0.

    Raises:
        MetricsError: the address cannot be bound (in use, not local, ...), naming address and port.
    """
    return serve_metrics(config.bind_address, config.port, registry, health, config, connections)

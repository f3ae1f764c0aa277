"""The daemon's bookkeeping off the frame path: capture events into metrics, gauges, frames left at a stop."""

from __future__ import annotations

from collections.abc import Callable

from inspector.capture.manager import CaptureManager
from inspector.capture.shared import (
    EVENT_CAPTURED,
    EVENT_DOWN,
    EVENT_DROPPED_PREFIX,
    EVENT_ENDED,
    EVENT_INCOMPLETE,
    EVENT_LOST_PACKETS,
    EVENT_RECONNECT,
    EVENT_RESTART,
    EVENT_UP,
)
from inspector.config.root import InspectorConfig
from inspector.daemon.ledger import DROP_SHUTDOWN_TIMEOUT
from inspector.daemon.pipeline import Pipeline
from inspector.ops.metrics import InspectorMetrics


class CaptureEvents:
    """The capture manager's event hook: counts and gauges per camera (called from its monitor thread)."""

    def __init__(self, metrics: InspectorMetrics) -> None:
        self._metrics = metrics

    def __call__(self, camera: str, name: str, value: float) -> None:
        """Record one event (see ``inspector.capture.shared.EVENT_*``)."""
        m = self._metrics
        if name == EVENT_CAPTURED:
            m.frames_captured.labels(camera=camera).inc(value)
        elif name == EVENT_RECONNECT:
            m.camera_reconnects.labels(camera=camera).inc(value)
        elif name == EVENT_INCOMPLETE:
            m.camera_incomplete_frames.labels(camera=camera).inc(value)
        elif name == EVENT_LOST_PACKETS:
            m.camera_lost_packets.labels(camera=camera).inc(value)
        elif name.startswith(EVENT_DROPPED_PREFIX):
            reason = name[len(EVENT_DROPPED_PREFIX) :]
            m.frames_dropped.labels(camera=camera, reason=reason).inc(value)
        elif name == EVENT_UP:
            m.camera_up.labels(camera=camera).set(1)
        elif name in (EVENT_DOWN, EVENT_ENDED, EVENT_RESTART):
            m.camera_up.labels(camera=camera).set(0)
            if name == EVENT_RESTART:
                m.restarts.labels(kind="camera", name=camera).inc()


def update_gauges(
    metrics: InspectorMetrics,
    config: InspectorConfig,
    pipeline: Pipeline | None,
    capture: CaptureManager | None,
    wall: Callable[[], float],
) -> None:
    """Queue depths, camera up and the worker's last progress, from the running parts."""
    if pipeline is not None:
        queued = pipeline.queued_by_camera()
        for cam in config.cameras:
            metrics.queue_depth.labels(queue="batcher", camera=cam.name).set(queued.get(cam.name, 0))
        metrics.worker_last_progress.set(wall() - pipeline.stalled_for_s())
    if capture is not None:
        for name, st in capture.stats().items():
            waiting = st.captured - st.delivered - sum(st.dropped_by_reason.values())
            metrics.queue_depth.labels(queue="capture", camera=name).set(max(0, waiting))
            metrics.camera_up.labels(camera=name).set(1 if st.up else 0)


def count_undelivered(
    config: InspectorConfig, capture: CaptureManager | None, metrics: InspectorMetrics
) -> dict[str, int]:
    """Frames captured but never handed to the pipeline (only after a failed shutdown): counted dropped.

    An external-trigger camera's frames have no place in its sequence until a trigger picks them: not counted.
    """
    if capture is None:
        return {}
    left: dict[str, int] = {}
    external = set(config.external_cameras)
    for name, st in capture.stats().items():
        if name in external:
            continue
        count = st.captured - st.delivered - sum(st.dropped_by_reason.values())
        if count > 0:
            left[name] = count
            metrics.frames_dropped.labels(camera=name, reason=DROP_SHUTDOWN_TIMEOUT).inc(count)
    return left

"""Tests for inspector.daemon.accounting: capture events become the camera's metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from inspector.capture.shared import EVENT_INCOMPLETE, EVENT_LOST_PACKETS
from inspector.daemon.accounting import CaptureEvents
from inspector.ops.metrics import InspectorMetrics


def test_incomplete_frames_and_lost_packets_are_counted_per_camera() -> None:
    registry = CollectorRegistry()
    metrics = InspectorMetrics(registry, include_process_collector=False)
    metrics.init_camera("g")
    events = CaptureEvents(metrics)
    events("g", EVENT_INCOMPLETE, 2.0)
    events("g", EVENT_LOST_PACKETS, 37.0)
    assert registry.get_sample_value("inspector_camera_incomplete_frames_total", {"camera": "g"}) == 2
    assert registry.get_sample_value("inspector_camera_lost_packets_total", {"camera": "g"}) == 37

"""Tests for inspector.capture.outages: a camera outage is logged once, reminded rarely, and its end reported."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import structlog
from structlog.testing import capture_logs

from inspector.capture.outages import DOWN_REMINDER_S, EventLog
from inspector.capture.shared import EVENT_DOWN, EVENT_ENDED, EVENT_ERROR, EVENT_UP

REFUSED = "camera cam1: cannot open stream source 'rtsp://10.0.0.9/live'"


def run(events: list[tuple[float, str, str, str]]) -> list[MutableMapping[str, Any]]:
    """Feed (time, camera, event name, message) to an EventLog; the log records it made."""
    now = [0.0]
    log = EventLog(structlog.get_logger(), clock=lambda: now[0])
    with capture_logs() as records:
        for at, camera, name, message in events:
            now[0] = at
            log.record(camera, name, 30.0, message)
    return records


def test_a_camera_that_stays_down_is_logged_once_then_its_retries_at_debug_then_up_at_info() -> None:
    retries = [(10.0 * i, "cam1", EVENT_DOWN, REFUSED) for i in range(1, 20)]  # every 10 s for 3 minutes
    records = run([(0.0, "cam1", EVENT_DOWN, REFUSED), *retries, (200.0, "cam1", EVENT_UP, "")])
    above_debug = [(r["event"], r["log_level"]) for r in records if r["log_level"] != "debug"]
    assert above_debug == [("camera_down", "warning"), ("camera_up", "info")]
    assert sum(r["event"] == "camera_retry_failed" for r in records) == 19
    up = records[-1]
    assert (up["camera"], up["down_s"], up["attempts"]) == ("cam1", 200.0, 20)


def test_a_long_outage_is_reminded_every_few_minutes_and_a_new_reason_at_once() -> None:
    minute_retries = [(60.0 * i, "cam1", EVENT_DOWN, REFUSED) for i in range(11)]  # 10 minutes
    other = (660.0, "cam1", EVENT_DOWN, "camera cam1: read failed on 'rtsp://10.0.0.9/live'")
    records = run([*minute_retries, other])
    warnings = [(r["event"], r.get("down_s")) for r in records if r["log_level"] == "warning"]
    assert warnings == [
        ("camera_down", None),
        ("camera_still_down", DOWN_REMINDER_S),
        ("camera_still_down", 2 * DOWN_REMINDER_S),
        ("camera_still_down", 660.0),  # the reason changed
    ]


def test_cameras_are_apart_and_other_events_keep_their_info_line() -> None:
    records = run([
        (0.0, "cam1", EVENT_DOWN, REFUSED),
        (1.0, "cam2", EVENT_DOWN, "camera cam2: cannot open"),
        (2.0, "cam1", EVENT_ERROR, REFUSED),  # the same failure reported again while down: debug
        (3.0, "cam3", EVENT_ERROR, "camera cam3: 000.png: not an image"),
        (4.0, "cam3", EVENT_ENDED, "camera cam3: source 'parts' ended"),
        (5.0, "cam3", EVENT_UP, ""),  # up without an outage: nothing to say
    ])  # fmt: skip
    lines = [(r["event"], r["camera"], r["log_level"]) for r in records]
    assert lines == [
        ("camera_down", "cam1", "warning"),
        ("camera_down", "cam2", "warning"),
        ("camera_event", "cam1", "debug"),
        ("camera_event", "cam3", "info"),
        ("camera_event", "cam3", "info"),
    ]

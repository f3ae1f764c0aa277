"""Tests for inspector.capture.shared: a camera's state from its counters."""

from __future__ import annotations

from typing import Any

from inspector.capture.shared import CameraStats


def stats(**fields: Any) -> CameraStats:
    base: dict[str, Any] = {
        "captured": 0, "delivered": 0, "dropped_by_reason": {}, "reconnects": 0, "restarts": 0,
        "up": False, "ended": False, "last_frame_at": None, "last_error": "",
    }  # fmt: skip
    base.update(fields)
    return CameraStats(**base)


def test_a_camera_that_never_failed_is_starting_not_down_until_it_fails() -> None:
    assert stats().state == "starting"
    assert stats(up=True).state == "up"
    assert stats(last_error="camera c: cannot open url source").state == "down"
    assert stats(reconnects=1).state == "down"
    assert stats(restarts=1).state == "down"
    assert stats(captured=5).state == "down"  # it delivered frames, then stopped: a fault
    assert stats(ended=True, captured=5).state == "ended"
    assert stats(paused=True, last_error="x").state == "paused"

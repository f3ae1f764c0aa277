"""How capture events are logged: a camera going down once at warning, its retries at debug, its return at info.

A camera that cannot reconnect sends a ``down`` event at every attempt (every ``retry_max_s`` at most); logging
each at info filled the journal with the same line every few seconds. :class:`EventLog` logs the outage once
(``camera_down``), a reminder every :data:`DOWN_REMINDER_S` or when the reason changes
(``camera_still_down``), each retry at debug, and the end of the outage (``camera_up``, with its length).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from inspector.capture.shared import EVENT_DOWN, EVENT_ERROR, EVENT_UP

DOWN_REMINDER_S = 300.0  # a camera still down is logged again at warning this often


@dataclass
class _Outage:
    since: float
    reminded: float
    message: str
    attempts: int = 1


class EventLog:
    """Logs one camera's events without repeating an outage at every reconnect attempt.

    Args:
        log: a structlog logger.
        clock: monotonic seconds.
    """

    def __init__(self, log: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self._log = log
        self._clock = clock
        self._down: dict[str, _Outage] = {}

    def is_down(self, camera: str) -> bool:
        """True between a camera's first ``down`` event and its next ``up``."""
        return camera in self._down

    def record(self, camera: str, name: str, value: float, message: str) -> None:
        """Log one event a camera process sent (``inspector.capture.shared`` event names)."""
        now = self._clock()
        outage = self._down.get(camera)
        if name == EVENT_DOWN:
            if outage is None:
                self._down[camera] = _Outage(since=now, reminded=now, message=message)
                self._log.warning("camera_down", camera=camera, message=message, retry_in_s=value)
                return
            outage.attempts += 1
            if message != outage.message or now - outage.reminded >= DOWN_REMINDER_S:
                outage.message, outage.reminded = message, now
                self._log.warning(
                    "camera_still_down", camera=camera, message=message, attempts=outage.attempts,
                    down_s=round(now - outage.since, 1), retry_in_s=value,
                )  # fmt: skip
            else:
                self._log.debug(
                    "camera_retry_failed", camera=camera, attempts=outage.attempts, retry_in_s=value
                )
            return
        if name == EVENT_UP:
            if outage is not None:
                del self._down[camera]
                self._log.info(
                    "camera_up", camera=camera, down_s=round(now - outage.since, 1), attempts=outage.attempts
                )
            return
        if name == EVENT_ERROR and outage is not None and message == outage.message:
            self._log.debug("camera_event", camera=camera, event_name=name, value=value, message=message)
            return
        if message:
            self._log.info("camera_event", camera=camera, event_name=name, value=value, message=message)

"""The heartbeat from the first second: ``starting`` on the bus while PyTorch and the galleries still load.

``inspector run`` binds the bus and starts :class:`EarlyHeartbeat` before it imports the daemon (PyTorch,
the backbone): a subscriber or a supervisor hears ``starting`` within a second of the process start, not
after the imports. The daemon stops it when its own heartbeat takes over, on the same socket and boot id.
This module stays light: it imports no model, capture or metrics code.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import structlog

from inspector.bus.publisher import Publisher, PublisherError
from inspector.bus.wire import CameraStatus, Heartbeat, rfc3339
from inspector.config.root import InspectorConfig

JOIN_TIMEOUT_S = 5.0


def starting_heartbeat(config: InspectorConfig, boot_id: str, uptime_s: float, now: float) -> Heartbeat:
    """The heartbeat of a daemon that is still starting: every camera ``starting``, nothing published."""
    cameras = {
        c.name: CameraStatus(state="starting", up=False, frames=0, last_seq=None) for c in config.cameras
    }
    return Heartbeat(
        boot_id=boot_id,
        published_at=rfc3339(now),
        state="starting",
        uptime_s=max(0.0, uptime_s),
        cameras=cameras,
        frames_published=0,
        worker="starting",
        worker_alive=False,
    )


class EarlyHeartbeat:
    """Publishes :func:`starting_heartbeat` every ``bus.heartbeat_interval_s`` on its own thread until stopped.

    Args:
        publisher: the daemon's bound publisher (its boot id is the daemon's).
        config: the daemon's configuration.
        started_at: ``monotonic()`` at process start, for the uptime.
        wall_clock: Unix time for ``published_at``.
        monotonic: the clock of ``started_at``.
    """

    def __init__(
        self,
        publisher: Publisher,
        config: InspectorConfig,
        started_at: float,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._publisher = publisher
        self._config = config
        self._started_at = started_at
        self._wall = wall_clock
        self._monotonic = monotonic
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sent = 0
        self._log = structlog.stdlib.get_logger(__name__)

    @property
    def started_at(self) -> float:
        """``monotonic()`` at process start: the daemon's uptime counts from here too."""
        return self._started_at

    def snapshot(self) -> Heartbeat:
        """The heartbeat to send now."""
        uptime = self._monotonic() - self._started_at
        return starting_heartbeat(self._config, self._publisher.boot_id, uptime, self._wall())

    def start(self) -> None:
        """Send the first heartbeat now and the next ones from a thread."""
        self._thread = threading.Thread(target=self._run, name="early-heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        interval = self._config.bus.heartbeat_interval_s
        while not self._stop.is_set():
            try:
                self._publisher.publish_heartbeat(self.snapshot())
                self.sent += 1
            except PublisherError:
                return  # closed: the daemon failed to start and is shutting down
            except Exception:  # noqa: BLE001 - a heartbeat must never take the start-up down
                self._log.error("early_heartbeat_failed", exc_info=True)
                return
            self._stop.wait(interval)

    def stop(self) -> None:
        """Stop sending (idempotent); returns once the thread has finished its last send."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(JOIN_TIMEOUT_S)

"""The daemon's heartbeats: sent every interval and at each phase change, never one from before a change after it.

The first ``ready`` heartbeat must precede every verdict, and a heartbeat computed while still ``starting`` must
not reach the bus after it: :class:`Heartbeats` computes and sends each heartbeat under one lock, the same lock
a phase change takes, so the order on the socket is the order of the phases.
"""

from __future__ import annotations

import threading

import structlog

from inspector.bus.publisher import Publisher, PublisherError
from inspector.bus.wire import DaemonState
from inspector.daemon.status import DaemonStatus


class Heartbeats:
    """Publishes :meth:`DaemonStatus.heartbeat` on the daemon's bus.

    Args:
        publisher: the daemon's bound publisher.
        status: the daemon's status (its phase is changed through :meth:`send`).
        interval_s: seconds between heartbeats (``bus.heartbeat_interval_s``).
    """

    def __init__(self, publisher: Publisher, status: DaemonStatus, interval_s: float) -> None:
        self._publisher = publisher
        self._status = status
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._log = structlog.stdlib.get_logger(__name__)

    def send(self, phase: DaemonState | None = None) -> None:
        """Move to ``phase`` (when given) and publish the heartbeat now.

        Raises:
            PublisherError: the publisher is closed.
        """
        with self._lock:
            if phase is not None:
                self._status.phase = phase
            self._publisher.publish_heartbeat(self._status.heartbeat())

    def run(self, stop: threading.Event) -> None:
        """Send one heartbeat every interval until ``stop`` is set, then a last one (stopped or failed)."""
        try:
            while True:
                self.send()
                if stop.wait(self._interval_s):
                    break
            self.send()
        except PublisherError:
            return  # closed by the shutdown path: the last heartbeat is best effort
        except Exception:  # noqa: BLE001 - heartbeats must never take the daemon down
            self._log.error("heartbeat_failed", exc_info=True)

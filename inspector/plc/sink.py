"""The OPC UA server inside the daemon: a pipeline sink for the verdicts, the daemon's status as heartbeats."""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from inspector.bus.wire import Heartbeat, VerdictHeader
from inspector.config.opcua import OpcUaConfig
from inspector.core.records import Outcome
from inspector.plc.server import Ops, PlcServer

STOP_JOIN_TIMEOUT_S = 5.0


class PlcSink:
    """Feeds the OPC UA server each published verdict; a thread hands it the daemon's status every interval.

    ``deliver`` parses the header the bus sent (``outcome.published``) and queues it for the server's loop:
    it never blocks the pipeline.
    """

    name = "opcua"

    def __init__(
        self,
        config: OpcUaConfig,
        cameras: list[str],
        ops: Ops,
        status: Callable[[], Heartbeat],
        interval_s: float,
        registry: CollectorRegistry | None = None,
    ) -> None:
        """Prepare the server (nothing listens until :meth:`start`); its metrics go to ``registry``."""
        self.server = PlcServer(config, cameras, ops, registry=registry)
        self._status = status
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._log = structlog.stdlib.get_logger(__name__)

    def start(self) -> int:
        """Listen, and start handing it the status; returns the port.

        Raises:
            Exception: the server could not listen (address in use, unreadable key or users file).
        """
        port = self.server.start()
        self.server.feed_heartbeat(self._status())
        self._thread = threading.Thread(target=self._status_loop, name="opcua-status", daemon=True)
        self._thread.start()
        return port

    def _status_loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.server.feed_heartbeat(self._status())
            except Exception:  # noqa: BLE001 - a status that cannot be built must not end the feed
                self._log.error("opcua_status_failed", exc_info=True)

    def deliver(self, outcome: Outcome) -> None:
        """Hand the published verdict to the server (outcomes the bus did not send are not results)."""
        if outcome.published is None:
            return
        try:
            self.server.feed_verdict(VerdictHeader.model_validate_json(outcome.published))
        except ValidationError as exc:
            self._log.error("opcua_verdict_unreadable", camera=outcome.frame.camera, error=str(exc))

    def close(self) -> None:
        """Stop the status feed and the server."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(STOP_JOIN_TIMEOUT_S)
        self.server.stop()

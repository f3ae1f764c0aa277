"""Line control of one daemon: the part source, the trigger and control sockets, and hot reloads of galleries."""

from __future__ import annotations

import threading

import structlog
import zmq

from inspector.bus.curve import CurveServer
from inspector.capture.manager import CaptureManager
from inspector.config.root import InspectorConfig
from inspector.core.errors import InspectorError
from inspector.daemon.commands import LineCommands
from inspector.daemon.control import ControlServer
from inspector.daemon.parts import REJECT_REASONS, PartSource
from inspector.daemon.products import Loader, ProductRegistry, ReloadResult
from inspector.daemon.status import DaemonStatus
from inspector.daemon.triggers import TriggerListener
from inspector.ops.metrics import InspectorMetrics

RELOAD_OK = "ok"
RELOAD_REFUSED = "refused"

Context = zmq.Context[zmq.Socket[bytes]]


class LineControlError(InspectorError):
    """A line-control socket cannot be bound; the message names the config field."""


class LineControl:
    """Everything the PLC drives: triggers, products and reloads, over ZeroMQ sockets and signals."""

    def __init__(
        self,
        config: InspectorConfig,
        context: Context,
        capture: CaptureManager,
        products: ProductRegistry,
        status: DaemonStatus,
        metrics: InspectorMetrics,
        loader: Loader,
        curve: CurveServer | None = None,
    ) -> None:
        """Prepare; :meth:`start` binds the sockets the config asks for (CURVE servers when ``curve``)."""
        self.products = products
        self.parts = PartSource(capture, config.cameras, products, metrics, fire=capture.fire_trigger)
        self.commands = LineCommands(status, self.parts, products, capture, self.reload, metrics)
        self._config = config
        self._metrics = metrics
        self._loader = loader
        self._listener = (
            TriggerListener(config.triggers.bind, config.triggers.rcvhwm, context, self.parts, curve)
            if config.external_cameras
            else None
        )
        self._server = (
            ControlServer(config.control.bind, context, self.commands, curve)
            if config.control.enabled
            else None
        )
        self._reload_requested = threading.Event()
        self._reloading: threading.Thread | None = None
        self._log = structlog.stdlib.get_logger(__name__)
        for reason in REJECT_REASONS:
            metrics.triggers_rejected.labels(reason=reason)
        for product in products.products:
            for result in (RELOAD_OK, RELOAD_REFUSED):
                metrics.gallery_reloads.labels(product=product, result=result)

    def start(self) -> dict[str, str]:
        """Bind the trigger socket (when a camera is external) and the control socket (when enabled).

        Returns:
            The endpoints bound, by config section.

        Raises:
            LineControlError: a socket cannot be bound (the field is named).
        """
        bound: dict[str, str] = {}
        for section, server in (("triggers", self._listener), ("control", self._server)):
            if server is None:
                continue
            try:
                bound[section] = server.start()
            except zmq.ZMQError as exc:
                self.stop()
                endpoint = getattr(self._config, section).bind
                raise LineControlError(f"{section}.bind: cannot bind {endpoint!r}: {exc}") from exc
        for camera in self.products.cameras:
            self.commands.publish_gallery(camera)
        return bound

    def reload(self, names: list[str] | None) -> list[ReloadResult]:
        """Reload products' galleries (all when ``names`` is None) beside the ones in service; log and count."""
        results = self.products.reload(names, self._loader)
        for r in results:
            self._metrics.gallery_reloads.labels(
                product=r.product, result=RELOAD_OK if r.ok else RELOAD_REFUSED
            ).inc()
            if r.ok:
                self._log.info("gallery_reloaded", product=r.product, gallery=r.gallery_hash)
            else:
                self._log.error(
                    "gallery_reload_refused", product=r.product, kept=r.gallery_hash, error=r.reason
                )
        for camera in self.products.cameras:
            self.commands.publish_gallery(camera)
        return results

    def request_reload(self) -> None:
        """Ask for a reload of every product (safe from a signal handler: the supervisor runs it)."""
        self._reload_requested.set()

    def service(self) -> None:
        """Supervisor step: start a requested reload in a thread (frames keep being scored meanwhile)."""
        if not self._reload_requested.is_set() or (
            self._reloading is not None and self._reloading.is_alive()
        ):
            return
        self._reload_requested.clear()
        self._reloading = threading.Thread(target=self.reload, args=(None,), name="reload", daemon=True)
        self._reloading.start()

    def stop(self) -> None:
        """Close the sockets and take no more triggers (waiting ones end in ERROR verdicts)."""
        for server in (self._listener, self._server):
            if server is not None:
                server.stop()
        self.parts.close()

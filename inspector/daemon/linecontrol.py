"""Line control of one daemon: the part source, the trigger and control sockets, and hot reloads of galleries."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

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
from inspector.daemon.serving import SocketServer, death_after
from inspector.daemon.status import DaemonStatus
from inspector.daemon.triggers import TriggerListener
from inspector.ops.metrics import InspectorMetrics

RELOAD_OK = "ok"
RELOAD_REFUSED = "refused"
RESTART_KIND = "socket"  # inspector_restarts_total{kind="socket", name="triggers"|"control"}
FIRST_RESTART_DELAY_S = 1.0  # a dead socket thread is restarted after this long (degraded meanwhile) ...
MAX_RESTART_DELAY_S = 30.0  # ... doubling for each death in a row, up to this
HEALTHY_AFTER_S = 60.0  # a thread that served this long since its restart starts again at the first delay

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
        env: Mapping[str, str] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """Prepare; :meth:`start` binds the sockets the config asks for (CURVE servers when ``curve``).

        ``env`` is read for the fault-injection hook of the hostile-input tests (``FAULT_INJECT_SOCKET_DEATH``).
        """
        self.products = products
        self.parts = PartSource(
            capture, config.cameras, products, metrics, triggers=config.triggers, fire=capture.fire_trigger
        )
        self.commands = LineCommands(status, self.parts, products, capture, self.reload, metrics)
        self._config = config
        self._metrics = metrics
        self._loader = loader
        self._status = status
        self._monotonic = monotonic
        env = env or {}
        self._listener = (
            TriggerListener(config.triggers.bind, config.triggers.rcvhwm, context, self.parts, curve,
                            self._died, death_after(env, TriggerListener.name))
            if config.external_cameras
            else None
        )  # fmt: skip
        self._server = (
            ControlServer(config.control.bind, context, self.commands, curve, self._died,
                          death_after(env, ControlServer.name))
            if config.control.enabled
            else None
        )  # fmt: skip
        self._restarts: dict[str, tuple[float, float]] = {}  # name -> (restart due at, delay used)
        self._started_at: dict[str, float] = {}
        self._reload_requested = threading.Event()
        self._reloading: threading.Thread | None = None
        self._log = structlog.stdlib.get_logger(__name__)
        for reason in REJECT_REASONS:
            metrics.triggers_rejected.labels(reason=reason)
        for product in products.products:
            for result in (RELOAD_OK, RELOAD_REFUSED):
                metrics.gallery_reloads.labels(product=product, result=result)
        for server in self._servers():
            metrics.restarts.labels(kind=RESTART_KIND, name=server.name)

    def _servers(self) -> list[SocketServer]:
        return [s for s in (self._listener, self._server) if s is not None]

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
                self._started_at[server.name] = self._monotonic()
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

    def _died(self, name: str, reason: str) -> None:
        """A socket's thread died (called from it): the daemon is degraded until the supervisor restarts it."""
        self._status.set_fault(f"{name}_socket", f"the {name} socket's thread died: {reason}")
        now = self._monotonic()
        previous = self._restarts.get(name)
        served_well = now - self._started_at.get(name, now) >= HEALTHY_AFTER_S
        delay = (
            FIRST_RESTART_DELAY_S
            if previous is None or served_well
            else min(MAX_RESTART_DELAY_S, 2 * previous[1])
        )
        self._restarts[name] = (now + delay, delay)

    def _restart_dead_servers(self) -> None:
        for server in self._servers():
            due = self._restarts.get(server.name)
            if server.alive or server.death is None or due is None or self._monotonic() < due[0]:
                continue
            try:
                endpoint = server.restart()
            except zmq.ZMQError as exc:
                self._restarts[server.name] = (self._monotonic() + due[1], due[1])
                self._log.error("socket_server_restart_failed", socket=server.name, error=str(exc))
                continue
            self._started_at[server.name] = self._monotonic()
            self._metrics.restarts.labels(kind=RESTART_KIND, name=server.name).inc()
            self._status.clear_fault(f"{server.name}_socket")
            self._log.warning("socket_server_restarted", socket=server.name, endpoint=endpoint)

    def service(self) -> None:
        """Supervisor step: restart a socket thread that died (after its delay); start a requested reload in
        a thread (frames keep being scored meanwhile)."""
        self._restart_dead_servers()
        if not self._reload_requested.is_set() or (
            self._reloading is not None and self._reloading.is_alive()
        ):
            return
        self._reload_requested.clear()
        self._reloading = threading.Thread(target=self.reload, args=(None,), name="reload", daemon=True)
        self._reloading.start()

    def stop(self) -> None:
        """Close the sockets and take no more triggers (waiting ones end in ERROR verdicts)."""
        for server in self._servers():
            server.stop()
        self.parts.close()

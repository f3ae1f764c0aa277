"""``inspector opcua``: the OPC UA server beside a daemon, fed by its bus and calling its control socket."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
import zmq

from inspector.bus.control import ControlError, error_answer, request
from inspector.bus.curve import CurveClient
from inspector.bus.wire import HEARTBEAT_TOPIC, VERDICT_TOPIC_PREFIX, decode_heartbeat, decode_verdict
from inspector.config.root import InspectorConfig
from inspector.core.errors import InspectorError
from inspector.plc.server import Ops, PlcServer

POLL_INTERVAL_MS = 100
SUB_RCVHWM = 10_000  # messages the SUB socket holds before ZeroMQ drops (the bus's own high-water mark)
_ANY_HOST = re.compile(r"^tcp://(\*|0\.0\.0\.0|\[::\]|\[\*\])(:\d+)$")

Context = zmq.Context[zmq.Socket[bytes]]


class BridgeError(InspectorError):
    """The bridge cannot find the daemon's bus or control socket from the configuration."""


def connect_endpoint(bind: str, field: str) -> str:
    """Where a client on this machine connects to a socket bound at ``bind`` (an any-address bind: 127.0.0.1).

    Raises:
        BridgeError: a bind whose port is chosen at start-up (``:*``): the field is named.
    """
    if bind.startswith("tcp://") and bind.endswith(":*"):
        raise BridgeError(
            f"{field} {bind!r} picks its port at start-up: give the endpoint on the command line"
        )
    match = _ANY_HOST.match(bind)
    return f"tcp://127.0.0.1{match.group(2)}" if match else bind


@dataclass(frozen=True)
class Endpoints:
    """The daemon's sockets as the bridge connects to them (control None: the daemon serves none)."""

    bus: str
    control: str | None


def endpoints_of(config: InspectorConfig, bus: str | None = None, control: str | None = None) -> Endpoints:
    """The bus and control endpoints: given ones, else derived from ``bus.bind`` and ``control.bind``.

    Raises:
        BridgeError: an endpoint that cannot be derived.
    """
    bus_ep = bus or connect_endpoint(config.bus.bind, "bus.bind")
    if control is None and config.control.enabled:
        control = connect_endpoint(config.control.bind, "control.bind")
    return Endpoints(bus_ep, control)


def control_ops(
    context: Context, endpoint: str | None, timeout_s: float, curve: CurveClient | None = None
) -> Ops:
    """Line commands through the daemon's control socket (an error answer when it serves none), as a CURVE
    client when ``curve`` is given."""

    def ops(doc: dict[str, Any]) -> dict[str, Any]:
        if endpoint is None:
            return error_answer("the daemon serves no control socket ([control] enabled = false)")
        try:
            return request(context, endpoint, doc, timeout_s, curve)
        except ControlError as exc:
            return error_answer(str(exc))

    return ops


class BusFeed:
    """Subscribes to the daemon's verdicts and heartbeats and feeds them to the server (one thread)."""

    def __init__(
        self,
        context: Context,
        endpoint: str,
        server: PlcServer,
        stop: threading.Event,
        curve: CurveClient | None = None,
    ) -> None:
        """Prepare the subscriber (connected in :meth:`run`; a CURVE client when ``curve`` is given)."""
        self._context, self._endpoint, self._server, self._stop = context, endpoint, server, stop
        self._curve = curve
        self.unreadable = 0
        self._log = structlog.stdlib.get_logger(__name__).bind(bus=endpoint)

    def run(self) -> None:
        """Receive until ``stop`` is set; an unreadable message is logged and counted, never fatal."""
        sock = self._context.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, SUB_RCVHWM)
        if self._curve is not None:
            self._curve.apply(sock)
        try:
            sock.connect(self._endpoint)
            for topic in (VERDICT_TOPIC_PREFIX, HEARTBEAT_TOPIC):
                sock.setsockopt(zmq.SUBSCRIBE, topic.encode("ascii"))
            while not self._stop.is_set():
                if sock.poll(POLL_INTERVAL_MS, zmq.POLLIN):
                    self._take(sock.recv_multipart())
        finally:
            sock.close(linger=0)

    def _take(self, parts: list[bytes]) -> None:
        try:
            if parts and parts[0] == HEARTBEAT_TOPIC.encode("ascii"):
                self._server.feed_heartbeat(decode_heartbeat(parts))
            else:
                self._server.feed_verdict(decode_verdict(parts)[1])
        except ValueError as exc:
            self.unreadable += 1
            self._log.error("bus_message_unreadable", error=str(exc))


def run_bridge(
    config: InspectorConfig,
    context: Context,
    stop: threading.Event,
    endpoints: Endpoints,
    on_listening: Callable[[int], object] | None = None,
    curve: CurveClient | None = None,
) -> None:
    """Serve OPC UA for the daemon of ``config`` until ``stop`` is set (a CURVE client of its sockets when
    ``curve`` is given: the daemon's ``[security]`` CURVE is on).

    Raises:
        Exception: the server could not listen (address in use, unreadable key or users file).
    """
    log = structlog.stdlib.get_logger(__name__)
    cameras = [c.name for c in config.cameras]
    server = PlcServer(
        config.opcua, cameras, control_ops(context, endpoints.control, config.opcua.request_timeout_s, curve)
    )
    port = server.start()
    log.info("opcua_bridge_ready", port=port, bus=endpoints.bus, control=endpoints.control, cameras=cameras)
    if on_listening is not None:
        on_listening(port)
    feed = BusFeed(context, endpoints.bus, server, stop, curve)
    try:
        feed.run()
    finally:
        server.stop()
        log.info("opcua_bridge_stopped", unreadable=feed.unreadable, **vars(server.stats))

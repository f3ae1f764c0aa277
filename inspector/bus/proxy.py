"""``inspector proxy``: a ZeroMQ XSUB/XPUB forwarder so consumers subscribe once to the buses of several daemons.

Each daemon binds its own PUB socket (``bus.bind``). The proxy's XSUB socket connects to every one of them
(``--frontend``, repeatable) and its XPUB socket binds one endpoint (``--backend``) that consumers connect
to. Subscriptions travel upstream (consumer -> XPUB -> XSUB -> each daemon's PUB), so daemons still filter
by topic, and messages are forwarded unchanged: ``boot_id`` and ``seq`` keep identifying each daemon's stream.
ZeroMQ reconnects the XSUB side by itself when a daemon restarts.

The forwarding loop is ``zmq.proxy_steerable`` on a thread; :meth:`BusProxy.stop` sends it ``TERMINATE``
over an inproc control socket, so a SIGTERM stops the proxy cleanly without terminating the caller's context.
"""

from __future__ import annotations

import errno
import threading
import uuid
from types import TracebackType
from typing import Self

import zmq

from inspector.bus.curve import CurveAuthenticator, CurveClient, CurveServer, apply_server
from inspector.config.proxy import ProxyConfig
from inspector.core.names import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK
from inspector.ops.logs import get_logger
from inspector.ops.sdnotify import SdNotifier

STOP_JOIN_TIMEOUT_S = 5.0
SUPERVISE_INTERVAL_S = 0.2
CONTROL_ENDPOINT_PREFIX = "inproc://inspector-proxy-control-"
TERMINATE_COMMAND = b"TERMINATE"
BAD_ENDPOINT_ERRNOS = frozenset({errno.EINVAL, errno.EPROTONOSUPPORT, zmq.EPROTONOSUPPORT})

Context = zmq.Context[zmq.Socket[bytes]]
Socket = zmq.Socket[bytes]


class ProxyError(RuntimeError):
    """The proxy cannot connect, bind, or was used in the wrong state.

    ``bad_endpoint`` is True when an endpoint itself is malformed (a configuration error, not worth a restart).
    """

    def __init__(self, message: str, bad_endpoint: bool = False) -> None:
        super().__init__(message)
        self.bad_endpoint = bad_endpoint


def _is_bad_endpoint(exc: zmq.ZMQError) -> bool:
    return exc.errno in BAD_ENDPOINT_ERRNOS


class BusProxy:
    """XSUB/XPUB forwarder between daemons' PUB sockets and consumers' SUB sockets.

    Use ``bind()`` then ``start()``, and ``stop()`` when done; or a ``with`` block, which does all three.
    """

    def __init__(
        self,
        config: ProxyConfig,
        context: Context,
        client: CurveClient | None = None,
        server: CurveServer | None = None,
    ) -> None:
        """Create an unbound proxy.

        Args:
            config: endpoints and socket options.
            context: ZeroMQ context owned by the caller (not terminated here).
            client: connect to the daemons as this CURVE client (their ``[security]`` CURVE is on).
            server: serve consumers as this CURVE server (the context's ZAP handler must be running).
        """
        self._config = config
        self._context = context
        self._client = client
        self._server = server
        self._sockets: dict[str, Socket] = {}
        self._thread: threading.Thread | None = None
        self._endpoint = ""
        self.error: zmq.ZMQError | None = None

    @property
    def config(self) -> ProxyConfig:
        """The proxy's endpoints and options."""
        return self._config

    @property
    def endpoint(self) -> str:
        """The backend endpoint actually bound (with the real port when ``*`` was given); "" before bind."""
        return self._endpoint

    @property
    def running(self) -> bool:
        """True while the forwarding thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def bind(self) -> str:
        """Create the sockets: connect XSUB to every frontend, bind XPUB to the backend.

        Returns:
            The backend endpoint bound.

        Raises:
            ProxyError: already bound, or an endpoint is invalid or cannot be bound (the option is named).
        """
        if self._sockets:
            raise ProxyError(f"proxy for {self._config.backend} is already bound")
        try:
            self._create_sockets()
        except ProxyError:
            self._close_sockets(linger_ms=0)
            raise
        return self._endpoint

    def _create_sockets(self) -> None:
        cfg = self._config
        xsub = self._socket("xsub", zmq.XSUB)
        xsub.setsockopt(zmq.RCVHWM, cfg.hwm)
        if self._client is not None:
            self._client.apply(xsub)
        for frontend in cfg.frontends:
            try:
                xsub.connect(frontend)
            except zmq.ZMQError as exc:
                raise ProxyError(
                    f"--frontend {frontend!r}: cannot connect: {exc}", _is_bad_endpoint(exc)
                ) from exc
        xpub = self._socket("xpub", zmq.XPUB)
        xpub.setsockopt(zmq.SNDHWM, cfg.hwm)
        apply_server(xpub, self._server)
        try:
            xpub.bind(cfg.backend)
        except zmq.ZMQError as exc:
            raise ProxyError(f"--backend {cfg.backend!r}: cannot bind: {exc}", _is_bad_endpoint(exc)) from exc
        last = xpub.getsockopt(zmq.LAST_ENDPOINT)
        self._endpoint = last.decode("utf-8") if isinstance(last, bytes) else str(last)
        control_endpoint = CONTROL_ENDPOINT_PREFIX + uuid.uuid4().hex
        self._socket("control_in", zmq.PAIR).bind(control_endpoint)
        self._socket("control_out", zmq.PAIR).connect(control_endpoint)

    def _socket(self, name: str, kind: int) -> Socket:
        sock = self._context.socket(kind)
        sock.setsockopt(zmq.LINGER, self._config.linger_ms)
        self._sockets[name] = sock
        return sock

    def start(self) -> None:
        """Run the forwarding loop on a daemon thread.

        Raises:
            ProxyError: not bound, or already started.
        """
        if not self._sockets or self._thread is not None:
            raise ProxyError(f"proxy for {self._config.backend} must be bound and not yet started")
        self._thread = threading.Thread(target=self._forward, name="inspector-proxy", daemon=True)
        self._thread.start()

    def _forward(self) -> None:
        sockets = self._sockets
        try:
            zmq.proxy_steerable(sockets["xsub"], sockets["xpub"], None, sockets["control_in"])
        except zmq.ZMQError as exc:  # ContextTerminated included: the caller ended the context under us
            self.error = exc

    def stop(self) -> None:
        """Stop forwarding, join the thread and close every socket. Idempotent.

        Raises:
            ProxyError: the forwarding thread did not end within ``STOP_JOIN_TIMEOUT_S``.
        """
        thread, self._thread = self._thread, None
        if thread is not None:
            if thread.is_alive():
                self._sockets["control_out"].send(TERMINATE_COMMAND)
            thread.join(STOP_JOIN_TIMEOUT_S)
            if thread.is_alive():
                raise ProxyError(f"proxy for {self._config.backend} did not stop in {STOP_JOIN_TIMEOUT_S} s")
        self._close_sockets(linger_ms=self._config.linger_ms)

    def _close_sockets(self, linger_ms: int) -> None:
        for sock in self._sockets.values():
            sock.close(linger=linger_ms)
        self._sockets = {}

    def __enter__(self) -> Self:
        """Bind and start."""
        self.bind()
        try:
            self.start()
        except ProxyError:
            self._close_sockets(linger_ms=0)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop."""
        self.stop()


def serve(
    config: ProxyConfig,
    context: Context,
    stop: threading.Event,
    notifier: SdNotifier,
    client: CurveClient | None = None,
    server: CurveServer | None = None,
) -> int:
    """Forward until ``stop`` is set (e.g. by SIGTERM) or the forwarding loop fails.

    Args:
        config: endpoints and options.
        context: ZeroMQ context (not terminated here).
        stop: set to stop.
        notifier: systemd notifier; READY=1 once bound, STOPPING=1 on the way out.
        client: CURVE client identity towards the daemons.
        server: CURVE server identity towards consumers (a ZAP handler is run on ``context`` for it).

    Returns:
        ``EXIT_OK`` after a requested stop, ``EXIT_CONFIG`` for a malformed endpoint, ``EXIT_FAILURE`` when
        binding (e.g. address in use) or forwarding failed.
    """
    auth = CurveAuthenticator(context, server) if server is not None else None
    if auth is not None:
        auth.start()
    try:
        return _serve(BusProxy(config, context, client, server), stop, notifier)
    finally:
        if auth is not None:
            auth.stop()


def _serve(proxy: BusProxy, stop: threading.Event, notifier: SdNotifier) -> int:
    log = get_logger("inspector.proxy")
    config = proxy.config
    try:
        proxy.bind()
        proxy.start()
    except ProxyError as exc:
        log.error("proxy_start_failed", error=str(exc))
        return EXIT_CONFIG if exc.bad_endpoint else EXIT_FAILURE
    log.info("proxy_started", frontends=list(config.frontends), backend=proxy.endpoint)
    notifier.ready()
    notifier.status(f"forwarding {len(config.frontends)} bus(es) to {proxy.endpoint}")
    while not stop.wait(SUPERVISE_INTERVAL_S) and proxy.running:
        pass
    notifier.stopping()
    failed = not stop.is_set()
    try:
        proxy.stop()
    except ProxyError as exc:
        log.error("proxy_stop_failed", error=str(exc))
        return EXIT_FAILURE
    if failed:
        log.error("proxy_failed", error=str(proxy.error))
        return EXIT_FAILURE
    log.info("proxy_stopped", backend=proxy.endpoint)
    return EXIT_OK

"""The metrics HTTP endpoint: ``/metrics`` without ``_created`` series, ``/healthz`` (ready) and ``/livez`` (alive).

Its own listener, with its own limits (``MetricsConfig``): one request per connection, every connection closed
``header_timeout_s`` after it was accepted whatever it is doing, at most ``max_connections`` open (and
``max_connections_per_client`` from one address; more: ``503``), methods other than GET and HEAD refused
(``405``), accept and handler errors logged at most once a second with a count. So a client that floods or
holds the results or live-view port cannot starve health checks and scrapes, and one that misbehaves on this
port holds a few threads for a few seconds.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import structlog
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.metrics_core import Metric

from inspector.config.metrics import MetricsConfig
from inspector.ops.connections import REFUSAL_RESPONSE, AcceptErrors, ConnectionMetrics, ConnectionTable
from inspector.ops.logs import LogThrottle

SERVER_THREAD_JOIN_TIMEOUT_S = 5.0
LISTENER = "metrics"
METHODS = ("GET", "HEAD")
ACCEPT_RETRY_S = 0.1  # after a failed accept (no file descriptor left), wait this long before the next
ERROR_LOG_INTERVAL_S = 1.0
POLL_INTERVAL_S = 0.5  # serve_forever's poll: connections past their time are closed this often
CREATED_SUFFIX = "_created"
METRICS_PATH = "/metrics"
HEALTH_PATH = "/healthz"
LIVENESS_PATH = "/livez"
StartResponse = Callable[..., Any]
Environ = dict[str, Any]


@dataclass(frozen=True)
class Health:
    """What the health paths answer.

    Attributes:
        ready: ``/healthz`` answers 200 (else 503): every verdict can be published (heartbeat state ready).
        alive: ``/livez`` answers 200 (else 503): the process needs no restart (starting, or its worker progresses).
        reason: the body's one line: ``ready``, or the state and why (``degraded: camera cam1 down: ...``).
    """

    ready: bool
    alive: bool
    reason: str


NOT_STARTED = Health(ready=False, alive=True, reason="starting")


class MetricsError(RuntimeError):
    """The metrics HTTP server cannot start."""


class WithoutCreated:
    """A view of a registry whose families lack the ``<name>_created`` samples prometheus-client adds.

    Those series (one per counter and histogram child) hold creation timestamps that no panel or rule uses;
    they double the series count. The view is what the endpoint serves; the registry itself is unchanged.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        """Wrap ``registry``."""
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        """The registry's families, each without its ``_created`` samples."""
        for family in self._registry.collect():
            family.samples = [s for s in family.samples if not s.name.endswith(CREATED_SUFFIX)]
            yield family

    def restricted_registry(self, names: Iterable[str]) -> WithoutCreated:
        """The same view over only the families ``names`` (``/metrics?name[]=...``)."""
        restricted = self._registry.restricted_registry(names)
        return WithoutCreated(restricted)  # type: ignore[arg-type]  # a registry view, same collect()


class _QuietHandler(WSGIRequestHandler):
    """No access log line per scrape; a read that waits past the connection's time fails (socket timeout)."""

    timeout = MetricsConfig().header_timeout_s

    def log_message(self, format: str, *args: Any) -> None:
        """Drop the message."""


class _GuardedServer(ThreadingWSGIServer):
    """The thread-per-connection WSGI server with connection caps, a deadline per connection and quiet errors."""

    table: ConnectionTable
    deadline_s: float

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Admit the connection under the caps, else answer 503 (and the server closes it)."""
        client = str(client_address[0]) if isinstance(client_address, tuple) else str(client_address)
        if self.table.admit(request, client) is None:
            return True
        try:
            request.settimeout(0)
            request.send(REFUSAL_RESPONSE)
        except OSError:
            pass
        return False

    def shutdown_request(self, request: Any) -> None:
        """Forget the connection, then close it."""
        self.table.release(request)
        super().shutdown_request(request)

    def service_actions(self) -> None:
        """Close every connection older than its deadline (its thread's read or write then fails)."""
        for request in self.table.silent():
            if isinstance(request, socket.socket):
                try:
                    request.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def get_request(self) -> tuple[Any, Any]:
        """Accept, logging a failure (out of file descriptors) at most once a second and pausing a little."""
        try:
            return super().get_request()
        except OSError as exc:
            self.accept_errors.failed(exc)
            time.sleep(ACCEPT_RETRY_S)
            raise

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection that failed (timed out, reset): one log line a second at most, never a traceback."""
        held = self.error_throttle.allow("handler")
        if held is not None:
            structlog.stdlib.get_logger(__name__).warning(
                "metrics_connection_failed", client=str(client_address), similar_lines_held_back=held
            )

    accept_errors: AcceptErrors
    error_throttle: LogThrottle


def get_and_head_only(
    app: Callable[[Environ, StartResponse], Iterable[bytes]],
) -> Callable[[Environ, StartResponse], Iterable[bytes]]:
    """Wrap a WSGI app: GET as is, HEAD as GET without the body, any other method 405."""

    def guarded(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "")
        if method == "GET":
            return app(environ, start_response)
        if method == "HEAD":
            captured: list[Any] = []
            body = b"".join(app({**environ, "REQUEST_METHOD": "GET"}, lambda *args: captured.append(args)))
            status, headers = captured[0][0], list(captured[0][1])
            if not any(name.lower() == "content-length" for name, _ in headers):
                headers.append(("Content-Length", str(len(body))))
            start_response(status, headers)
            return []
        text = f"method {method[:16]!r} not allowed: use {' or '.join(METHODS)}\n".encode()
        start_response(
            "405 Method Not Allowed",
            [("Allow", ", ".join(METHODS)), ("Content-Type", "text/plain; charset=utf-8"),
             ("Content-Length", str(len(text)))],
        )  # fmt: skip
        return [text]

    return guarded


def metrics_app(
    registry: CollectorRegistry, health: Callable[[], Health]
) -> Callable[[Environ, StartResponse], list[bytes]]:
    """The WSGI application of the endpoint: ``/metrics``, ``/healthz`` and ``/livez`` (200 or 503), else 404."""
    exposition = make_wsgi_app(WithoutCreated(registry))

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path == METRICS_PATH:
            body: list[bytes] = exposition(environ, start_response)
            return body
        if path in (HEALTH_PATH, LIVENESS_PATH):
            now = health()
            ok = now.ready if path == HEALTH_PATH else now.alive
            status = "200 OK" if ok else "503 Service Unavailable"
            text = (now.reason + "\n").encode()
        else:
            status, text = (
                "404 Not Found",
                f"not found: {path} (try {METRICS_PATH}, {HEALTH_PATH} or {LIVENESS_PATH})\n".encode(),
            )
        start_response(
            status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(text)))]
        )
        return [text]

    return app


class MetricsServer:
    """A running metrics HTTP server; :meth:`close` stops it and frees the port."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        """Wrap a serving WSGI server and its thread."""
        self.server = server
        self.thread = thread

    @property
    def port(self) -> int:
        """The TCP port actually bound."""
        return int(self.server.server_port)

    def close(self) -> None:
        """Stop serving, close the listening socket and join the thread."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(SERVER_THREAD_JOIN_TIMEOUT_S)


def serve_metrics(
    address: str,
    port: int,
    registry: CollectorRegistry,
    health: Callable[[], Health],
    limits: MetricsConfig | None = None,
    connections: ConnectionMetrics | None = None,
) -> tuple[MetricsServer, int]:
    """Start :func:`metrics_app` on ``address:port`` in a daemon thread, within ``limits``.

    Returns:
        (server, actual port).

    Raises:
        MetricsError: the address cannot be bound, naming address and port.
    """
    limits = limits if limits is not None else MetricsConfig()
    try:
        family = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)[0][0]
        handler = type("MetricsHandler", (_QuietHandler,), {"timeout": limits.header_timeout_s})
        server_class = type("MetricsWSGIServer", (_GuardedServer,), {"address_family": family})
        server: WSGIServer = make_server(
            address,
            port,
            get_and_head_only(metrics_app(registry, health)),
            server_class=server_class,
            handler_class=handler,
        )
    except OSError as exc:
        raise MetricsError(
            f"metrics: cannot listen on {address}:{port} (metrics.bind_address/port): {exc}"
        ) from exc
    assert isinstance(server, _GuardedServer)
    server.table = ConnectionTable(LISTENER, limits, connections)
    server.accept_errors = AcceptErrors(LISTENER)
    server.error_throttle = LogThrottle(ERROR_LOG_INTERVAL_S)
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": POLL_INTERVAL_S},
        name="metrics-http",
        daemon=True,
    )
    thread.start()
    wrapped = MetricsServer(server, thread)
    return wrapped, wrapped.port

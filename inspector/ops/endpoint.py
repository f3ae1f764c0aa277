"""The metrics HTTP endpoint: ``/metrics`` without ``_created`` series, ``/healthz`` (ready) and ``/livez`` (alive)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.metrics_core import Metric

SERVER_THREAD_JOIN_TIMEOUT_S = 5.0
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
    """No access log line per scrape."""

    def log_message(self, format: str, *args: Any) -> None:
        """Drop the message."""


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
    address: str, port: int, registry: CollectorRegistry, health: Callable[[], Health]
) -> tuple[MetricsServer, int]:
    """Start :func:`metrics_app` on ``address:port`` in a daemon thread.

    Returns:
        (server, actual port).

    Raises:
        MetricsError: the address cannot be bound, naming address and port.
    """
    try:
        family = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)[0][0]
        server_class = type("MetricsWSGIServer", (ThreadingWSGIServer,), {"address_family": family})
        server: WSGIServer = make_server(
            address,
            port,
            metrics_app(registry, health),
            server_class=server_class,
            handler_class=_QuietHandler,
        )
    except OSError as exc:
        raise MetricsError(
            f"metrics: cannot listen on {address}:{port} (metrics.bind_address/port): {exc}"
        ) from exc
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    wrapped = MetricsServer(server, thread)
    return wrapped, wrapped.port

"""Connection caps of the daemon's HTTP listeners: per listener and per client address, a header timeout,
and accept errors logged at most once a second with a count.

No client can hold more than ``max_connections_per_client`` connections of a listener, nor the listener more
than ``max_connections``: one over a cap is answered ``503`` and closed at once. A connection that has not
sent a complete request within ``header_timeout_s`` of connecting is closed. So idle or slow clients cost a
bounded number of file descriptors (below the unit's ``LimitNOFILE``), and the other listeners, the sockets
and the archive keep theirs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from inspector.config.base import HttpLimitsConfig
from inspector.ops.logs import LogThrottle

REFUSED_TOTAL = "max_connections"
REFUSED_PER_CLIENT = "max_connections_per_client"
CLOSED_HEADER_TIMEOUT = "header_timeout"
REFUSAL_REASONS = (REFUSED_TOTAL, REFUSED_PER_CLIENT, CLOSED_HEADER_TIMEOUT)
ACCEPT_ERROR_LOG_INTERVAL_S = 1.0
_REFUSAL_TEXT = b"too many connections: try again later\n"
REFUSAL_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: " + str(len(_REFUSAL_TEXT)).encode() + b"\r\n\r\n"
    + _REFUSAL_TEXT
)  # fmt: skip


class ConnectionMetrics:
    """``inspector_http_connections{listener}`` and ``inspector_http_connections_refused_total{listener,reason}``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        """Register both on ``registry``."""
        self.open = Gauge(
            "inspector_http_connections",
            "Open connections of an HTTP listener.",
            ["listener"],
            registry=registry,
        )
        self.refused = Counter(
            "inspector_http_connections_refused_total",
            "HTTP connections refused at a cap (max_connections, max_connections_per_client) or closed for "
            "sending no complete request within header_timeout_s.",
            ["listener", "reason"],
            registry=registry,
        )

    def init_listener(self, listener: str) -> None:
        """Create a listener's series at 0."""
        self.open.labels(listener=listener).set(0)
        for reason in REFUSAL_REASONS:
            self.refused.labels(listener=listener, reason=reason)


@dataclass
class _Connection:
    client: str
    opened_at: float
    requests: int = 0


class ConnectionTable:
    """The open connections of one listener, by a key of the caller's (a socket, a transport). Thread-safe."""

    def __init__(
        self,
        listener: str,
        limits: HttpLimitsConfig,
        metrics: ConnectionMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Enforce ``limits`` on the listener named ``listener`` (in metrics and logs)."""
        self.listener = listener
        self._limits = limits
        self._metrics = metrics
        self._clock = clock
        self._lock = threading.Lock()
        self._open: dict[Hashable, _Connection] = {}
        self._per_client: dict[str, int] = {}
        if metrics is not None:
            metrics.init_listener(listener)

    def __len__(self) -> int:
        """Connections open now."""
        with self._lock:
            return len(self._open)

    def admit(self, key: Hashable, client: str) -> str | None:
        """Register a new connection from ``client`` (its address); the refusal reason when over a cap."""
        with self._lock:
            if len(self._open) >= self._limits.max_connections:
                reason: str | None = REFUSED_TOTAL
            elif self._per_client.get(client, 0) >= self._limits.max_connections_per_client:
                reason = REFUSED_PER_CLIENT
            else:
                reason = None
                self._open[key] = _Connection(client, self._clock())
                self._per_client[client] = self._per_client.get(client, 0) + 1
            count = len(self._open)
        self._count(reason, count)
        return reason

    def rekey(self, old: Hashable, new: Hashable) -> None:
        """Track an admitted connection under another key (a socket that became a transport)."""
        with self._lock:
            connection = self._open.pop(old, None)
            if connection is not None:
                self._open[new] = connection

    def request_started(self, key: Hashable) -> int:
        """A request's headers arrived on the connection: the header timeout is over; returns its number (1..)."""
        with self._lock:
            connection = self._open.get(key)
            if connection is None:
                return 0
            connection.requests += 1
            return connection.requests

    def release(self, key: Hashable) -> None:
        """The connection closed (unknown keys are ignored)."""
        with self._lock:
            connection = self._open.pop(key, None)
            if connection is not None:
                left = self._per_client[connection.client] - 1
                if left:
                    self._per_client[connection.client] = left
                else:
                    del self._per_client[connection.client]
            count = len(self._open)
        if self._metrics is not None:
            self._metrics.open.labels(listener=self.listener).set(count)

    def keys(self) -> list[Hashable]:
        """Every open connection's key."""
        with self._lock:
            return list(self._open)

    def silent(self) -> list[Hashable]:
        """Connections that sent no complete request within ``header_timeout_s`` of connecting (counted)."""
        deadline = self._clock() - self._limits.header_timeout_s
        with self._lock:
            late = [k for k, c in self._open.items() if c.requests == 0 and c.opened_at < deadline]
        if late and self._metrics is not None:
            self._metrics.refused.labels(listener=self.listener, reason=CLOSED_HEADER_TIMEOUT).inc(len(late))
        return late

    def _count(self, reason: str | None, count: int) -> None:
        if self._metrics is None:
            return
        if reason is not None:
            self._metrics.refused.labels(listener=self.listener, reason=reason).inc()
        self._metrics.open.labels(listener=self.listener).set(count)


class AcceptErrors:
    """Logs a listener's accept errors (too many open files...) at most once a second, with the count held back."""

    def __init__(self, listener: str, clock: Callable[[], float] = time.monotonic) -> None:
        """Throttle the accept errors of ``listener``."""
        self._throttle = LogThrottle(ACCEPT_ERROR_LOG_INTERVAL_S, clock)
        self._log = structlog.stdlib.get_logger(__name__).bind(listener=listener)

    def failed(self, exc: OSError) -> None:
        """One accept failed."""
        held = self._throttle.allow(type(exc).__name__)
        if held is not None:
            self._log.error(
                "http_accept_failed", error=str(exc), errno=exc.errno, similar_lines_held_back=held
            )

"""Verdict bus publisher: one ZeroMQ PUB socket sending verdict and heartbeat messages."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Literal, Self

import zmq
from pydantic import BaseModel, ConfigDict, Field

from inspector.wire import (
    Heartbeat,
    MaskKind,
    VerdictHeader,
    encode_heartbeat,
    encode_verdict,
    rfc3339,
)

MaskMode = Literal["anomaly_map", "binary", "none"]
MASK_KIND_BY_MODE: dict[MaskMode, MaskKind | None] = {
    "anomaly_map": "anomaly_map_u8",
    "binary": "binary",
    "none": None,
}


class BusConfig(BaseModel):
    """The ``[bus]`` config section: where and how verdicts are published."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    bind: str = Field(
        default="tcp://127.0.0.1:5556",
        description="ZeroMQ endpoint the PUB socket binds (tcp://HOST:PORT, ipc://PATH; port * = any free).",
    )
    sndhwm: int = Field(
        default=10000,
        ge=1,
        description="Messages queued per subscriber before ZeroMQ drops for that subscriber.",
    )
    linger_ms: int = Field(default=2000, ge=0, description="How long close() waits to flush queued messages.")
    heartbeat_interval_s: float = Field(
        default=1.0, gt=0, le=60, description="Seconds between heartbeat messages."
    )
    mask: MaskMode = Field(
        default="anomaly_map",
        description="Mask part content: anomaly_map (map scaled to 0..255), binary (0/255 defect mask) or none.",
    )


class PublisherError(RuntimeError):
    """The publisher cannot bind or is used in the wrong state."""


class Publisher:
    """Publishes verdicts and heartbeats on a PUB socket.

    Thread-safe: a lock serialises sends, so the pipeline thread and the heartbeat thread may share one
    publisher. PUB sockets never block: when a subscriber's queue (``sndhwm``) is full ZeroMQ drops the
    message for that subscriber. ``published_at`` and ``boot_id`` of every message are stamped here, at send
    time, from the injected clock and the publisher's boot id.
    """

    def __init__(
        self,
        config: BusConfig,
        context: zmq.Context[zmq.Socket[bytes]],
        boot_id: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Create an unbound publisher.

        Args:
            config: bus section of the configuration.
            context: ZeroMQ context owned by the caller (not terminated here).
            boot_id: this process's boot id (see ``inspector.wire.new_boot_id``).
            clock: wall clock in Unix seconds, used for ``published_at``.
        """
        self._config = config
        self._context = context
        self._boot_id = boot_id
        self._clock = clock
        self._lock = threading.Lock()
        self._socket: zmq.Socket[bytes] | None = None
        self._closed = False
        self._verdicts_published = 0
        self._endpoint = ""

    @property
    def endpoint(self) -> str:
        """The bound endpoint with the actual port (useful when binding ``tcp://host:*``); "" before bind."""
        return self._endpoint

    @property
    def verdicts_published(self) -> int:
        """Number of verdict messages handed to ZeroMQ since bind."""
        return self._verdicts_published

    def bind(self) -> str:
        """Create the PUB socket and bind it.

        Returns:
            The actual endpoint bound.

        Raises:
            PublisherError: already bound or closed, or ZeroMQ cannot bind the address (address named).
        """
        with self._lock:
            if self._closed or self._socket is not None:
                raise PublisherError(f"publisher for {self._config.bind} is already bound or closed")
            sock = self._context.socket(zmq.PUB)
            sock.setsockopt(zmq.SNDHWM, self._config.sndhwm)
            sock.setsockopt(zmq.LINGER, self._config.linger_ms)
            try:
                sock.bind(self._config.bind)
            except zmq.ZMQError as exc:
                sock.close(linger=0)
                raise PublisherError(
                    f"bus.bind: cannot bind PUB socket to {self._config.bind!r}: {exc}"
                ) from exc
            endpoint = sock.getsockopt(zmq.LAST_ENDPOINT)
            self._endpoint = endpoint.decode("utf-8") if isinstance(endpoint, bytes) else str(endpoint)
            self._socket = sock
            return self._endpoint

    def _send(self, parts: list[bytes]) -> None:
        """Send one multipart message; caller holds the lock."""
        if self._socket is None:
            state = "closed" if self._closed else "not bound"
            raise PublisherError(f"publisher for {self._config.bind} is {state}")
        self._socket.send_multipart(parts)

    def publish_verdict(self, header: VerdictHeader, mask_bytes: bytes) -> None:
        """Publish one frame's verdict, stamping ``published_at`` and ``boot_id``.

        Args:
            header: the verdict header; its ``published_at`` and ``boot_id`` are replaced.
            mask_bytes: PNG bytes from ``inspector.wire.encode_mask``, or b"" when the mask is disabled.

        Raises:
            PublisherError: not bound or already closed.
            ValueError: mask bytes contradict ``header.mask``.
        """
        with self._lock:
            stamped = header.model_copy(
                update={"published_at": rfc3339(self._clock()), "boot_id": self._boot_id}
            )
            self._send(encode_verdict(stamped, mask_bytes))
            self._verdicts_published += 1

    def publish_heartbeat(self, hb: Heartbeat) -> None:
        """Publish a heartbeat, stamping ``published_at`` and ``boot_id``.

        Raises:
            PublisherError: not bound or already closed.
        """
        with self._lock:
            stamped = hb.model_copy(update={"published_at": rfc3339(self._clock()), "boot_id": self._boot_id})
            self._send(encode_heartbeat(stamped))

    def close(self) -> None:
        """Close the socket, waiting up to ``linger_ms`` for queued messages to go out. Idempotent."""
        with self._lock:
            if self._socket is not None:
                self._socket.close(linger=self._config.linger_ms)
                self._socket = None
            self._closed = True

    def __enter__(self) -> Self:
        """Bind on entering a ``with`` block."""
        self.bind()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close on leaving a ``with`` block."""
        self.close()


def run_heartbeats(
    publisher: Publisher,
    snapshot: Callable[[], Heartbeat],
    interval_s: float,
    stop: threading.Event,
) -> None:
    """Publish ``snapshot()`` every ``interval_s`` until ``stop`` is set (run it in a thread).

    One final heartbeat is sent after ``stop`` is set so subscribers see the last state (e.g. "stopping").

    Args:
        publisher: a bound publisher.
        snapshot: builds the current heartbeat (its published_at/boot_id are restamped).
        interval_s: seconds between heartbeats (``BusConfig.heartbeat_interval_s``).
        stop: set to end the loop.
    """
    while True:
        publisher.publish_heartbeat(snapshot())
        if stop.wait(interval_s):
            break
    try:
        publisher.publish_heartbeat(snapshot())
    except PublisherError:
        return  # already closed by the shutdown path: the final heartbeat is best effort

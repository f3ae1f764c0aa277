"""Verdict bus publisher: one ZeroMQ PUB socket sending verdict and heartbeat messages."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self

import zmq

from inspector.bus.curve import CurveServer, apply_server
from inspector.bus.wire import (
    Heartbeat,
    MaskInfo,
    MaskKind,
    VerdictHeader,
    anomaly_map_to_u8,
    encode_heartbeat,
    encode_mask,
    encode_verdict,
    rfc3339,
)
from inspector.config.bus import BusConfig, MaskMode
from inspector.core.records import Outcome

MASK_KIND_BY_MODE: dict[MaskMode, MaskKind | None] = {
    "anomaly_map": "anomaly_map_u8",
    "binary": "binary",
    "none": None,
}
MS_PER_S = 1000.0


class PublisherError(RuntimeError):
    """The publisher cannot bind or is used in the wrong state."""


class Publisher:
    """Publishes verdicts and heartbeats on a PUB socket; the only place a verdict header is built.

    Thread-safe: a lock serialises sends, so the pipeline thread and the heartbeat thread may share one
    publisher. PUB sockets never block: when a subscriber's queue (``sndhwm``) is full ZeroMQ drops the
    message for that subscriber. A verdict's ``boot_id``, ``published_at`` and ``end_to_end`` latency are
    set here, at send time, from the publisher's boot id and the injected clocks.
    """

    def __init__(
        self,
        config: BusConfig,
        context: zmq.Context[zmq.Socket[bytes]],
        boot_id: str,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        curve: CurveServer | None = None,
    ) -> None:
        """Create an unbound publisher.

        Args:
            config: bus section of the configuration.
            context: ZeroMQ context owned by the caller (not terminated here).
            boot_id: this process's boot id (see ``inspector.bus.wire.new_boot_id``).
            clock: wall clock in Unix seconds, used for ``published_at``.
            monotonic: clock comparable with ``Frame.monotonic_at``, for the ``end_to_end`` latency.
            curve: the daemon's CURVE identity: the PUB socket then serves only allowed CURVE clients (the
                context's ZAP handler, :class:`inspector.bus.curve.CurveAuthenticator`, must be running).
        """
        self._config = config
        self._context = context
        self._boot_id = boot_id
        self._clock = clock
        self._monotonic = monotonic
        self._curve = curve
        self._mask_kind = MASK_KIND_BY_MODE[config.mask]
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
            if self._config.sndbuf_bytes:  # bounded staleness: a stalled subscriber's kernel backlog is small
                sock.setsockopt(zmq.SNDBUF, self._config.sndbuf_bytes)
            sock.setsockopt(zmq.LINGER, self._config.linger_ms)
            apply_server(sock, self._curve)
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

    @property
    def boot_id(self) -> str:
        """The boot id stamped on every message."""
        return self._boot_id

    def publish(self, outcome: Outcome) -> VerdictHeader:
        """Publish one frame's verdict: build its header, encode its mask as ``bus.mask`` says, send.

        Returns:
            The header as sent.

        Raises:
            PublisherError: not bound or already closed.
            ValueError: the outcome cannot be encoded (for example a non-finite score); nothing was sent.
        """
        started = self._monotonic()
        mask, info = self._encode_mask(outcome)
        latency = {**outcome.latency_ms, "encode": (self._monotonic() - started) * MS_PER_S}
        with self._lock:
            latency["end_to_end"] = (self._monotonic() - outcome.frame.monotonic_at) * MS_PER_S
            header = verdict_header(outcome, self._boot_id, rfc3339(self._clock()), latency, info)
            self._send(encode_verdict(header, mask))
            self._verdicts_published += 1
        return header

    def _encode_mask(self, outcome: Outcome) -> tuple[bytes, MaskInfo]:
        kind = self._mask_kind
        if kind == "binary" and outcome.mask is not None:
            return encode_mask(outcome.mask, "binary")
        if (
            kind == "anomaly_map_u8"
            and outcome.anomaly_map is not None
            and outcome.pixel_threshold is not None
        ):
            return encode_mask(anomaly_map_to_u8(outcome.anomaly_map, outcome.pixel_threshold), kind)
        return encode_mask(None, kind or "anomaly_map_u8")

    def publish_heartbeat(self, hb: Heartbeat) -> None:
        """Publish a heartbeat (built with this publisher's boot id), stamping ``published_at``.

        Raises:
            PublisherError: not bound or already closed.
            ValueError: the heartbeat carries another boot id.
        """
        if hb.boot_id != self._boot_id:
            raise ValueError(f"heartbeat boot_id {hb.boot_id} is not this publisher's {self._boot_id}")
        with self._lock:
            self._send(encode_heartbeat(hb.model_copy(update={"published_at": rfc3339(self._clock())})))

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


def verdict_header(
    outcome: Outcome, boot_id: str, published_at: str, latency_ms: dict[str, float], mask: MaskInfo
) -> VerdictHeader:
    """The wire header of an outcome.

    Raises:
        ValueError: a field does not validate (pydantic's ValidationError is a ValueError).
    """
    frame = outcome.frame
    return VerdictHeader(
        boot_id=boot_id,
        camera=frame.camera,
        seq=frame.seq,
        frame_id=frame.frame_id,
        part_id=frame.part_id,
        captured_at=rfc3339(frame.captured_at),
        published_at=published_at,
        age_ms=max(0.0, latency_ms.get("end_to_end", 0.0)),
        verdict=outcome.verdict,
        score=outcome.score,
        threshold=outcome.threshold,
        defect_area_px=outcome.defect_area_px,
        product=frame.product,
        gallery=outcome.gallery,
        latency_ms={stage: max(0.0, ms) for stage, ms in latency_ms.items()},
        mask=mask,
        error=outcome.error,
    )

"""Verdict bus publisher: one ZeroMQ XPUB socket sending verdict and heartbeat messages.

The socket is a PUB to every subscriber; it is an XPUB in manual mode so that the daemon checks each
subscription before applying it and bounds what subscribers may cost (``inspector.bus.subscriptions``).
"""

from __future__ import annotations

import select
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Self

import structlog
import zmq

from inspector.bus.curve import CurveServer, apply_server
from inspector.bus.subscriptions import (
    MAX_SUBSCRIPTION_BYTES,
    SCAN_EVERY_SUBSCRIPTIONS,
    SCAN_INTERVAL_S,
    SUBSCRIBE,
    SubscriberLimits,
    topic_check,
)
from inspector.bus.wire import (
    NO_MASK,
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
SUBSCRIPTION_WAIT_S = 0.1  # the subscription thread's longest sleep when the socket does not signal
DRAIN_PER_SEND = 16  # subscription messages handled after each send, under the send lock
DRAIN_PER_TURN = 256  # and by the subscription thread per turn
REFUSED_LOG_INTERVAL_S = 60.0
THREAD_JOIN_TIMEOUT_S = 5.0


class PublisherError(RuntimeError):
    """The publisher cannot bind or is used in the wrong state."""


class Publisher:
    """Publishes verdicts and heartbeats on a PUB socket; the only place a verdict header is built.

    Thread-safe: a lock serialises sends, so the pipeline thread and the heartbeat thread may share one
    publisher. PUB sockets never block: when a subscriber's queue (``sndhwm``) is full ZeroMQ drops the
    message for that subscriber. A verdict's ``boot_id``, ``published_at`` and ``end_to_end`` latency are
    set here, at send time, from the publisher's boot id and the injected clocks. A thread of its own applies
    the subscriptions that pass the check and drops subscribers that send too much.
    """

    def __init__(
        self,
        config: BusConfig,
        context: zmq.Context[zmq.Socket[bytes]],
        boot_id: str,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        curve: CurveServer | None = None,
        cameras: Sequence[str] | None = None,
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
            cameras: the daemon's cameras: only subscriptions to a prefix of ``heartbeat`` or
                ``verdict.<camera>`` are applied (None: of ``verdict.`` and any camera name).
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
        self._allowed = topic_check(cameras)
        self._limits: SubscriberLimits | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._since_scan = 0
        self._refused_log_at = -REFUSED_LOG_INTERVAL_S
        self.subscriptions_refused = 0
        self.subscribers_dropped = 0
        self._log = structlog.stdlib.get_logger(__name__)

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
            sock = self._context.socket(zmq.XPUB)
            sock.setsockopt(zmq.XPUB_MANUAL, 1)
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_SUBSCRIPTION_BYTES)
            sock.setsockopt(zmq.RCVHWM, SCAN_EVERY_SUBSCRIPTIONS)  # subscriptions taken in per look, at most
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
            if self._endpoint.startswith("tcp://"):
                port = int(self._endpoint.rsplit(":", 1)[1])
                self._limits = SubscriberLimits(
                    port, self._config.max_subscription_bytes, self._config.max_subscribers
                )
            fd = sock.getsockopt(zmq.FD)
        self._thread = threading.Thread(
            target=self._serve_subscriptions, args=(int(fd),), name="bus-subscriptions", daemon=True
        )
        self._thread.start()
        return self._endpoint

    def _send(self, parts: list[bytes]) -> None:
        """Send one multipart message, then apply a few waiting subscriptions; caller holds the lock."""
        if self._socket is None:
            state = "closed" if self._closed else "not bound"
            raise PublisherError(f"publisher for {self._config.bind} is {state}")
        self._socket.send_multipart(parts)
        self._since_scan += self._drain(self._socket, DRAIN_PER_SEND)

    def _drain(self, sock: zmq.Socket[bytes], most: int) -> int:
        """Apply (or refuse) up to ``most`` subscription messages waiting on the socket; caller holds the lock.

        In manual mode ``setsockopt(SUBSCRIBE)`` applies to the subscriber whose message was read last.
        """
        handled = refused = 0
        if not int(sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN:  # also clears the socket's FD signal
            return 0
        while handled < most:
            try:
                message = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            handled += 1
            if not message:
                continue
            topic = message[1:]
            if message[0] != SUBSCRIBE:
                sock.setsockopt(zmq.UNSUBSCRIBE, topic)
            elif self._allowed(topic):
                sock.setsockopt(zmq.SUBSCRIBE, topic)
            else:
                refused += 1
        if refused:
            self.subscriptions_refused += refused
            now = time.monotonic()
            if now - self._refused_log_at >= REFUSED_LOG_INTERVAL_S:
                self._refused_log_at = now
                self._log.warning(
                    "bus_subscription_refused",
                    refused_total=self.subscriptions_refused,
                    reason="not a prefix of heartbeat or verdict.<camera> of this daemon",
                )
        return handled

    def _serve_subscriptions(self, fd: int) -> None:
        """Apply subscriptions as they arrive; look at the subscribers' costs now and then."""
        last_scan = time.monotonic()
        while not self._stop.is_set():
            try:
                select.select([fd], [], [], SUBSCRIPTION_WAIT_S)
            except (OSError, ValueError):
                return  # the socket was closed under us: the publisher is closing
            with self._lock:
                if self._socket is None:
                    return
                self._since_scan += self._drain(self._socket, DRAIN_PER_TURN)
                due = self._since_scan >= SCAN_EVERY_SUBSCRIPTIONS
            if self._limits is not None and (due or time.monotonic() - last_scan >= SCAN_INTERVAL_S):
                with self._lock:
                    self._since_scan = 0
                last_scan = time.monotonic()
                for drop in self._limits.scan():
                    self.subscribers_dropped += 1
                    self._log.warning(
                        "bus_subscriber_dropped",
                        peer=drop.peer,
                        reason=drop.reason,
                        charged=drop.charged_bytes,
                    )

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
        return b"", NO_MASK

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
        self._stop.set()
        if self._thread is not None:
            self._thread.join(THREAD_JOIN_TIMEOUT_S)
            self._thread = None
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
        pixel_threshold=outcome.pixel_threshold,
        review_threshold=outcome.review_threshold,
        defect_area_px=outcome.defect_area_px,
        product=frame.product,
        gallery=outcome.gallery,
        latency_ms={stage: max(0.0, ms) for stage, ms in latency_ms.items()},
        mask=mask,
        error=outcome.error,
    )

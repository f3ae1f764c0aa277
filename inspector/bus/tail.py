"""``inspector tail``: subscribe to the verdict bus, print verdicts, warn on gaps, stale verdicts and restarts."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TextIO

import zmq

from inspector.bus.curve import CurveClient
from inspector.bus.wire import (
    HEARTBEAT_TOPIC,
    VERDICT_TOPIC_PREFIX,
    Heartbeat,
    VerdictHeader,
    decode_heartbeat,
    decode_verdict,
    latency_s,
    parse_rfc3339,
)
from inspector.core.names import EXIT_OK, EXIT_USAGE

POLL_INTERVAL_MS = 100
SUB_RCVHWM = 100_000
MS_PER_S = 1000.0
DEFAULT_MAX_AGE_MS = 2000.0  # a verdict older than this on arrival is reported stale (the line's budget)


@dataclass(frozen=True)
class Gap:
    """Frames missing between two consecutive verdicts of one camera."""

    camera: str
    previous: int
    current: int

    @property
    def missing(self) -> int:
        """Number of sequence numbers skipped."""
        return self.current - self.previous - 1

    def message(self) -> str:
        """Human-readable warning text."""
        return f"gap: camera {self.camera} seq {self.previous} -> {self.current}, {self.missing} missing"


@dataclass(frozen=True)
class Regression:
    """A sequence number that repeats or goes backwards within one boot (duplicate or reordering)."""

    camera: str
    previous: int
    current: int

    def message(self) -> str:
        """Human-readable warning text."""
        return f"out of order: camera {self.camera} seq {self.previous} -> {self.current}"


@dataclass(frozen=True)
class Restart:
    """The publisher's boot id changed: the daemon restarted and sequence numbers start over."""

    old_boot_id: str
    new_boot_id: str

    def message(self) -> str:
        """Human-readable warning text."""
        return f"restart: daemon boot_id {self.old_boot_id} -> {self.new_boot_id}, sequence numbers reset"


@dataclass(frozen=True)
class Stale:
    """A verdict older than the line's budget when it arrived: a gateway must treat it as a reject."""

    camera: str
    seq: int
    age_ms: float
    max_age_ms: float

    def message(self) -> str:
        """Human-readable warning text."""
        return (
            f"stale: camera {self.camera} seq {self.seq} arrived {self.age_ms:.0f} ms after capture "
            f"(budget {self.max_age_ms:.0f} ms): treat it as a reject"
        )


def arrival_age_ms(header: VerdictHeader, now: float) -> float:
    """How old a verdict is on arrival at wall time ``now``: its ``age_ms`` plus the time since publish."""
    in_transit_s = now - parse_rfc3339(header.published_at)
    return header.age_ms + max(0.0, in_transit_s) * MS_PER_S


SequenceEvent = Gap | Regression | Restart | Stale


class SequenceTracker:
    """Detects lost and reordered verdicts per camera and daemon restarts. Pure: no I/O, no clock.

    The first verdict seen for a camera (after start or after a restart) sets the baseline: joining a
    running stream is not a gap. Boot ids are tracked per camera, so several daemons behind one
    ``inspector proxy`` (each with its own cameras and boot id) are not mistaken for restarts.
    """

    def __init__(self) -> None:
        """Start with no boot id and no cameras."""
        self._boot_id: str | None = None
        self._boots: dict[str, str] = {}
        self._last: dict[str, int] = {}

    @property
    def boot_id(self) -> str | None:
        """The boot id seen most recently."""
        return self._boot_id

    def last_seq(self, camera: str) -> int | None:
        """Last sequence number seen for ``camera`` in the current boot."""
        return self._last.get(camera)

    def observe_boot(self, boot_id: str, cameras: Iterable[str]) -> Restart | None:
        """Note the boot id a message carries for its cameras; a change for any of them resets those
        cameras' sequence numbers and returns a Restart."""
        self._boot_id = boot_id
        previous: str | None = None
        for camera in cameras:
            known = self._boots.get(camera)
            if known != boot_id:
                self._boots[camera] = boot_id
                self._last.pop(camera, None)
                previous = known or previous
        return None if previous is None else Restart(previous, boot_id)

    def observe(self, boot_id: str, camera: str, seq: int) -> list[SequenceEvent]:
        """Note one verdict; return the restart, gap or regression it reveals (usually nothing)."""
        events: list[SequenceEvent] = []
        restart = self.observe_boot(boot_id, [camera])
        if restart is not None:
            events.append(restart)
        previous = self._last.get(camera)
        if previous is not None:
            if seq > previous + 1:
                events.append(Gap(camera, previous, seq))
            elif seq <= previous:
                events.append(Regression(camera, previous, seq))
        if previous is None or seq > previous:
            self._last[camera] = seq
        return events


def _fmt_float(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _part_text(part_id: str | None) -> str:
    """A part id as one token: ``-`` when there is none, JSON-quoted when empty or with white space."""
    if part_id is None:
        return "-"
    return json.dumps(part_id) if not part_id or any(c.isspace() for c in part_id) else part_id


def format_verdict_line(header: VerdictHeader) -> str:
    """One text line per verdict: camera, seq, part id, verdict, score, threshold, area, end-to-end latency."""
    end_to_end = latency_s(header)
    e2e = "-" if end_to_end is None else f"{end_to_end * MS_PER_S:.1f}ms"
    area = "-" if header.defect_area_px is None else str(header.defect_area_px)
    part = _part_text(header.part_id)
    line = (
        f"{header.published_at} {header.camera} seq={header.seq} part={part} {header.verdict} "
        f"score={_fmt_float(header.score)} thr={_fmt_float(header.threshold)} area={area} e2e={e2e}"
    )
    return line + (f" error={header.error!r}" if header.error else "")


def format_heartbeat_line(hb: Heartbeat, old_state: str | None) -> str:
    """One text line for a heartbeat that changed something: daemon state, worker and camera states."""
    cameras = " ".join(f"{name}={cam.state}" for name, cam in hb.cameras.items()) or "-"
    return (
        f"{hb.published_at} heartbeat: state {old_state or '-'} -> {hb.state} "
        f"(boot {hb.boot_id[:8]}, uptime {hb.uptime_s:.0f}s, worker {hb.worker}, cameras {cameras})"
    )


class TailPrinter:
    """Turns received messages into output lines (text or JSON). Pure apart from its state."""

    def __init__(
        self,
        as_json: bool = False,
        max_age_ms: float = DEFAULT_MAX_AGE_MS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Create a printer.

        Args:
            as_json: emit one JSON object per line instead of text.
            max_age_ms: a verdict older than this on arrival gets a ``stale`` warning.
            clock: wall clock (Unix seconds) of the arrival.
        """
        self.as_json = as_json
        self.max_age_ms = max_age_ms
        self._clock = clock
        self.tracker = SequenceTracker()
        self._state: str | None = None
        self._seen: tuple[str, ...] | None = None

    def _warning(self, kind: str, text: str) -> str:
        if self.as_json:
            return json.dumps({"warning": kind, "message": text})
        return f"WARNING {text}"

    def _event_lines(self, events: Iterable[SequenceEvent]) -> list[str]:
        kinds = {Gap: "gap", Regression: "out_of_order", Restart: "restart", Stale: "stale"}
        return [self._warning(kinds[type(e)], e.message()) for e in events]

    def on_heartbeat(self, hb: Heartbeat) -> list[str]:
        """Lines for a heartbeat: a restart warning and/or a change of daemon, worker or camera state."""
        restart = self.tracker.observe_boot(hb.boot_id, hb.cameras.keys())
        lines = self._event_lines([restart] if restart else [])
        seen = (hb.state, hb.worker, *(f"{name}={cam.state}" for name, cam in hb.cameras.items()))
        if restart is not None or seen != self._seen:
            old, self._state, self._seen = self._state, hb.state, seen
            lines.append(hb.model_dump_json() if self.as_json else format_heartbeat_line(hb, old))
        return lines

    def on_verdict(self, header: VerdictHeader) -> list[str]:
        """Lines for a verdict: any sequence warnings, then the verdict itself."""
        events = self.tracker.observe(header.boot_id, header.camera, header.seq)
        age_ms = arrival_age_ms(header, self._clock())
        if age_ms > self.max_age_ms:
            events.append(Stale(header.camera, header.seq, age_ms, self.max_age_ms))
        lines = self._event_lines(events)
        lines.append(header.model_dump_json() if self.as_json else format_verdict_line(header))
        return lines

    def on_message(self, parts: Sequence[bytes]) -> tuple[list[str], bool]:
        """Lines for any received message, and whether it was a valid verdict."""
        topic = parts[0] if parts else b""
        try:
            if topic.startswith(VERDICT_TOPIC_PREFIX.encode("ascii")):
                _, header, _ = decode_verdict(list(parts))
                return self.on_verdict(header), True
            if topic == HEARTBEAT_TOPIC.encode("ascii"):
                return self.on_heartbeat(decode_heartbeat(list(parts))), False
        except ValueError as exc:
            return [self._warning("malformed", f"malformed message: {exc}")], False
        return [self._warning("unknown_topic", f"unknown topic {topic!r} ({len(parts)} parts)")], False


def tail(
    connect: str,
    context: zmq.Context[zmq.Socket[bytes]],
    out: TextIO,
    count: int | None,
    topics: Sequence[str],
    stop_event: threading.Event,
    as_json: bool = False,
    max_age_ms: float = DEFAULT_MAX_AGE_MS,
    curve: CurveClient | None = None,
) -> int:
    """Subscribe to a verdict bus and print what arrives until ``count`` verdicts or ``stop_event``.

    Heartbeats are always subscribed to (state changes are printed, boot id changes are restarts).

    Args:
        connect: endpoint of the daemon's PUB socket, e.g. ``tcp://127.0.0.1:5556``.
        context: ZeroMQ context (not terminated here).
        out: where lines go (flushed per message).
        count: stop after this many verdicts; None runs until ``stop_event`` is set.
        topics: subscription prefixes, e.g. ``["verdict."]`` or ``["verdict.cam1"]``.
        stop_event: set from another thread or a signal handler to stop.
        as_json: print JSON objects instead of text lines.
        max_age_ms: warn (``stale``) on a verdict older than this when it arrives.
        curve: connect as this CURVE client (the daemon's ``[security]`` CURVE is on).

    Returns:
        Exit status: 0, or ``EXIT_USAGE`` (2) when the endpoint is invalid.

    Raises:
        BrokenPipeError: ``out`` is a pipe whose reader has gone (``inspector tail | head``); the socket is
            closed first.
    """
    sock = context.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, SUB_RCVHWM)
    if curve is not None:
        curve.apply(sock)
    try:
        try:
            sock.connect(connect)
        except zmq.ZMQError as exc:
            out.write(f"error: cannot connect to {connect!r}: {exc}\n")
            return EXIT_USAGE
        for topic in {*topics, HEARTBEAT_TOPIC}:
            sock.setsockopt(zmq.SUBSCRIBE, topic.encode("utf-8"))
        printer = TailPrinter(as_json=as_json, max_age_ms=max_age_ms)
        verdicts = 0
        while not stop_event.is_set() and (count is None or verdicts < count):
            if not sock.poll(POLL_INTERVAL_MS, zmq.POLLIN):
                continue
            lines, is_verdict = printer.on_message(sock.recv_multipart())
            verdicts += int(is_verdict)
            out.writelines(line + "\n" for line in lines)
            out.flush()
        return EXIT_OK
    finally:
        sock.close(linger=0)

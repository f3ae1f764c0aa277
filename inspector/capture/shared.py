"""Capture's shared constants, channel item types and counters, used by the parent and the camera processes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from inspector.core.errors import InspectorError
from inspector.core.names import CameraState
from inspector.core.records import Image

# Event names passed to on_event(camera, name, value).
EVENT_UP = "up"  # value 1.0: source opened
EVENT_DOWN = "down"  # value: seconds until the next attempt (0.0 when none)
EVENT_ENDED = "ended"  # file/folder source finished without loop
EVENT_ERROR = "error"  # non-fatal problem (an unreadable image: its frame carries a fault) or child crash
EVENT_RESTART = "restart"  # parent killed/restarted a hung or dead child process
EVENT_CAPTURED = "captured"  # value: frames captured since the last call
EVENT_RECONNECT = "reconnect"  # value: reopen attempts since the last call
EVENT_DROPPED_PREFIX = "dropped:"  # + reason; value: frames dropped since the last call
EVENT_INCOMPLETE = "incomplete"  # value: incomplete frames (lost packets, timeouts) since the last call
EVENT_LOST_PACKETS = "lost_packets"  # value: stream packets lost since the last call (GenICam)

# Drop reasons. Child side: counted in shared memory. Parent side: counted by CameraProcess.
DROP_QUEUE_FULL = "queue_full"  # channel full: the oldest queued frame was discarded
DROP_CHANNEL_BUSY = "channel_busy"  # the child gave up enqueueing (PUT_ATTEMPTS): the new frame was discarded
DROP_PROCESS_RESTART = "process_restart"  # in flight when a hung/dead child was killed
DROP_STOP_TIMEOUT = "stop_timeout"  # in flight when a child had to be killed at stop
DROP_PENDING_FULL = "pending_full"  # parent drain buffer overflowed (should not happen)

# Shared-memory slots written by the child (single writer), read by the parent.
(I_SEQ, I_RECONNECTS, I_UP, I_ENDED, I_DROP_QUEUE_FULL, I_DROP_CHANNEL_BUSY, I_INCOMPLETE, I_LOST_PACKETS,
 I_OPENED) = range(9)  # fmt: skip
N_INTS = 9
# I_OPENED: how the latest attempt to open the source ended.
OPENED_NOT_YET, OPENED_OK, OPENED_FAILED, OPENED_REFUSED = range(4)
F_DEADLINE, F_LAST_FRAME_AT = range(2)
N_FLOATS = 2
CHILD_DROP_SLOTS = {DROP_QUEUE_FULL: I_DROP_QUEUE_FULL, DROP_CHANNEL_BUSY: I_DROP_CHANNEL_BUSY}


@dataclass(frozen=True)
class CaptureMeta:
    """What a camera says about one frame beyond its image (GenICam cameras)."""

    frame_id: str | None = None  # the camera's own frame (block) id
    camera_timestamp_ns: int | None = None  # the camera's clock when it took the frame
    trigger_seq: int | None = None  # the PLC trigger whose software trigger took it
    captured_at: float | None = None  # host wall clock when the frame arrived (replaces the child's clock)


@dataclass(frozen=True)
class ReadResult:
    """One read of a source: a frame (or a fault frame), the end or failure (``image`` None), or ``idle``."""

    image: Image | None
    part_id: str | None = None
    fault: str | None = None  # why a frame with a place in the sequence has no image
    meta: CaptureMeta | None = None
    idle: bool = False  # nothing to hand on yet and the source is alive (a triggered camera between parts)


# seq, captured_at, monotonic_at, part_id, image, fault, meta
FrameItem = tuple[int, float, float, str | None, Image, str | None, CaptureMeta | None]
EventItem = tuple[str, float, str]  # name, value, message
Clock = Callable[[], float]
EventHook = Callable[[str, str, float], None]


class CaptureError(RuntimeError):
    """A camera configuration that cannot work on this host (e.g. GStreamer missing)."""


class CameraRefusedError(InspectorError):
    """A reachable camera refused its configuration (a feature it lacks, a value it refuses): not retried
    at start-up, where it is a configuration error (exit status 78)."""


class StopSignal(Protocol):
    """Anything with is_set(): a threading.Event or a multiprocessing Event."""

    def is_set(self) -> bool:
        """True once a stop was requested."""
        ...


@dataclass(frozen=True)
class CameraStats:
    """Counters of one camera. After stop and a full drain, captured == delivered + sum(dropped)."""

    captured: int
    delivered: int
    dropped_by_reason: dict[str, int]
    reconnects: int
    restarts: int
    up: bool
    ended: bool
    last_frame_at: float | None
    last_error: str
    paused: bool = False
    stopping: bool = False  # a clean stop asked the camera to finish
    stopped: bool = False  # ... and it has finished
    failed: bool = False  # given up past its restart budget (the daemon exits non-zero)
    incomplete: int = 0  # frames that arrived incomplete (never scored)
    lost_packets: int = 0  # stream packets lost (GenICam)

    @property
    def state(self) -> CameraState:
        """down (failed or reconnecting), ended, stopping/stopped (clean stop), paused, up or starting.

        A camera given up past its restart budget stays ``down``; a finished file stays ``ended``; any other
        camera reads ``stopping`` then ``stopped`` during a clean stop, never ``down``.
        """
        if self.failed:
            return "down"
        if self.ended:
            return "ended"
        if self.stopping:
            return "stopped" if self.stopped else "stopping"
        if self.paused:
            return "paused"
        if self.up:
            return "up"
        never_failed = not (self.captured or self.reconnects or self.restarts or self.last_error)
        return "starting" if never_failed else "down"

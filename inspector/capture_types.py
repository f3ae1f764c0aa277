"""Capture's configuration, frame record and shared constants, used by the parent and the camera processes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "CHILD_DROP_SLOTS",
    "DROP_CHANNEL_BUSY",
    "DROP_PENDING_FULL",
    "DROP_PROCESS_RESTART",
    "DROP_QUEUE_FULL",
    "DROP_STOP_TIMEOUT",
    "EVENT_CAPTURED",
    "EVENT_DOWN",
    "EVENT_DROPPED_PREFIX",
    "EVENT_ENDED",
    "EVENT_ERROR",
    "EVENT_RECONNECT",
    "EVENT_RESTART",
    "EVENT_UP",
    "F_DEADLINE",
    "F_LAST_FRAME_AT",
    "I_DROP_CHANNEL_BUSY",
    "I_DROP_QUEUE_FULL",
    "I_ENDED",
    "I_RECONNECTS",
    "I_SEQ",
    "I_UP",
    "N_FLOATS",
    "N_INTS",
    "URL_SCHEMES",
    "CameraConfig",
    "CameraStats",
    "CaptureError",
    "Clock",
    "EventHook",
    "EventItem",
    "Frame",
    "FrameItem",
    "Image",
    "SourceKind",
    "StopSignal",
]

SourceKind = Literal["auto", "device", "url", "file", "folder", "gstreamer"]
URL_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "rtmp://", "udp://", "tcp://", "srt://")

# Event names passed to on_event(camera, name, value).
EVENT_UP = "up"  # value 1.0: source opened
EVENT_DOWN = "down"  # value: seconds until the next attempt (0.0 when none)
EVENT_ENDED = "ended"  # file/folder source finished without loop
EVENT_ERROR = "error"  # non-fatal problem (unreadable image) or child crash
EVENT_RESTART = "restart"  # parent killed/restarted a hung or dead child process
EVENT_CAPTURED = "captured"  # value: frames captured since the last call
EVENT_RECONNECT = "reconnect"  # value: reopen attempts since the last call
EVENT_DROPPED_PREFIX = "dropped:"  # + reason; value: frames dropped since the last call

# Drop reasons. Child side: counted in shared memory. Parent side: counted by CameraProcess.
DROP_QUEUE_FULL = "queue_full"  # channel full: the oldest queued frame was discarded
DROP_CHANNEL_BUSY = "channel_busy"  # the child gave up enqueueing (PUT_ATTEMPTS): the new frame was discarded
DROP_PROCESS_RESTART = "process_restart"  # in flight when a hung/dead child was killed
DROP_STOP_TIMEOUT = "stop_timeout"  # in flight when a child had to be killed at stop
DROP_PENDING_FULL = "pending_full"  # parent drain buffer overflowed (should not happen)

# Shared-memory slots written by the child (single writer), read by the parent.
I_SEQ, I_RECONNECTS, I_UP, I_ENDED, I_DROP_QUEUE_FULL, I_DROP_CHANNEL_BUSY = range(6)
N_INTS = 6
F_DEADLINE, F_LAST_FRAME_AT = range(2)
N_FLOATS = 2
CHILD_DROP_SLOTS = {DROP_QUEUE_FULL: I_DROP_QUEUE_FULL, DROP_CHANNEL_BUSY: I_DROP_CHANNEL_BUSY}

Image = npt.NDArray[np.uint8]
FrameItem = tuple[int, float, float, str | None, Image]  # seq, captured_at, monotonic_at, part_id, image
EventItem = tuple[str, float, str]  # name, value, message
Clock = Callable[[], float]
EventHook = Callable[[str, str, float], None]


class CaptureError(RuntimeError):
    """A camera configuration that cannot work on this host (e.g. GStreamer missing)."""


class StopSignal(Protocol):
    """Anything with is_set(): a threading.Event or a multiprocessing Event."""

    def is_set(self) -> bool: ...


class CameraConfig(BaseModel):
    """One camera of the ``[[cameras]]`` config list."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Unique name used in logs and frames.")
    source: str = Field(
        min_length=1, description='Device index "0", URL, video file, folder or GStreamer pipeline.'
    )
    kind: SourceKind = Field("auto", description="Source type; auto guesses it from source.")
    fps: float | None = Field(
        None, gt=0, le=1000, description="File/folder pacing, frames/s; None: file rate."
    )
    loop: bool = Field(False, description="File/folder sources restart at the end.")
    as_fast_as_possible: bool = Field(False, description="File/folder sources are read without pacing.")
    open_timeout_s: float = Field(5.0, gt=0, le=120, description="Seconds allowed to open the source.")
    read_timeout_s: float = Field(5.0, gt=0, le=120, description="Seconds without a frame before reconnect.")
    retry_initial_s: float = Field(0.5, gt=0, le=60, description="First reconnect wait in seconds (doubles).")
    retry_max_s: float = Field(30.0, gt=0, le=3600, description="Longest reconnect wait in seconds.")
    queue_size: int = Field(8, ge=1, le=1024, description="Frames buffered; when full the oldest is dropped.")
    gallery: Path | None = Field(None, description="Per-camera gallery override (used by the worker).")

    @model_validator(mode="after")
    def _consistent(self) -> CameraConfig:
        if self.retry_max_s < self.retry_initial_s:
            raise ValueError(f"camera {self.name}: retry_max_s must be >= retry_initial_s")
        if self.resolved_kind() == "device" and not self.source.strip().isdigit():
            raise ValueError(f"camera {self.name}: kind device needs a device index, got {self.source!r}")
        return self

    def resolved_kind(self) -> str:
        """Return the concrete source kind, guessing it from ``source`` when kind is auto."""
        if self.kind != "auto":
            return self.kind
        src = self.source.strip()
        if src.isdigit():
            return "device"
        if src.lower().startswith(URL_SCHEMES):
            return "url"
        if "!" in src:
            return "gstreamer"
        return "folder" if Path(src).is_dir() else "file"


@dataclass(frozen=True, eq=False)
class Frame:
    """One captured image. ``seq`` counts per camera from 0; a gap means frames were dropped."""

    camera: str
    seq: int
    captured_at: float  # wall clock (injected clock), seconds
    monotonic_at: float  # time.monotonic() in the child, seconds
    image: Image  # BGR uint8, HxWx3
    part_id: str | None = None  # folder sources: the image file's stem


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

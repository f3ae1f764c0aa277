"""The capture loop that runs inside one camera's process: open, read, pace, publish and reconnect."""

from __future__ import annotations

import math
import multiprocessing as mp
import multiprocessing.connection as mpc
import queue
import time
from collections.abc import Callable
from multiprocessing.queues import Queue as MpQueue
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from inspector.capture.genicam import GENICAM_READ_BOUND_S, Counter, open_genicam
from inspector.capture.shared import (
    EVENT_DOWN,
    EVENT_ENDED,
    EVENT_ERROR,
    EVENT_UP,
    F_DEADLINE,
    F_LAST_FRAME_AT,
    I_DROP_CHANNEL_BUSY,
    I_DROP_QUEUE_FULL,
    I_ENDED,
    I_OPENED,
    I_RECONNECTS,
    I_SEQ,
    I_UP,
    OPENED_FAILED,
    OPENED_OK,
    OPENED_REFUSED,
    CaptureMeta,
    Clock,
    EventItem,
    FrameItem,
    ReadResult,
)
from inspector.config.camera import CameraConfig
from inspector.core.names import IMAGE_SUFFIXES
from inspector.core.records import NO_IMAGE, Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FOLDER_DEFAULT_FPS = 10.0  # folder pacing in frames/s when fps is unset
FILE_FALLBACK_FPS = 25.0  # used when a video file reports no frame rate
MAX_FILE_FPS = 1000.0  # a video file's reported rate above this is taken as unknown
EVENT_MESSAGE_MAX_CHARS = 500  # keeps every event pickle far below PIPE_BUF, so writes are atomic
DROP_GET_TIMEOUT_S = 0.1  # a full channel: wait this long to take its oldest frame
PUT_ATTEMPTS = 3  # enqueue tries before the new frame is dropped as channel_busy
MS_PER_S = 1000.0  # OpenCV open/read timeouts are in milliseconds
LOCAL_READ_BOUND_S = 60.0  # a file or folder read (a large image's decode on a busy CPU) may take this long
PNG_SIZE_END = 24  # bytes 16..24 of a PNG (IHDR) hold its width and height, big-endian


Channels = tuple["MpQueue[FrameItem]", "MpQueue[EventItem]", mpc.Connection, mpc.Connection]
# frames, events, the stop signal's reading end, the software triggers' reading end


class _Source(Protocol):
    def read(self) -> ReadResult: ...
    def close(self) -> None: ...


class _CvSource:
    """cv2.VideoCapture wrapper; read() returns None at end of stream or on failure."""

    def __init__(self, cap: cv2.VideoCapture) -> None:
        self.cap = cap

    def read(self) -> ReadResult:
        ok, image = self.cap.read()
        return ReadResult(_to_bgr(image) if ok and image is not None else None)

    def close(self) -> None:
        self.cap.release()


class _FolderSource:
    """Sorted image files of a folder; each file is one frame: its image, or a fault saying why it has none."""

    def __init__(self, files: list[Path], report: Callable[[str], None], max_frame_px: int) -> None:
        self.files = files
        self.index = 0
        self.report = report
        self.max_frame_px = max_frame_px

    def read(self) -> ReadResult:
        if self.index >= len(self.files):
            return ReadResult(None)
        path = self.files[self.index]
        self.index += 1
        image, fault = read_folder_image(path, self.max_frame_px)
        if fault is not None:
            self.report(fault)
            return ReadResult(NO_IMAGE, path.stem, fault)
        return ReadResult(image, path.stem)

    def close(self) -> None:
        self.index = len(self.files)


def read_folder_image(path: Path, max_frame_px: int) -> tuple[Image, str | None]:
    """Decode one image file as BGR uint8, or return (NO_IMAGE, why it cannot be a frame) naming the file."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        return NO_IMAGE, f"unreadable image file {path}: {exc.strerror or exc}"
    if data.size == 0:
        return NO_IMAGE, f"unreadable image file {path}: the file is empty (0 bytes)"
    header = data[:PNG_SIZE_END].tobytes()
    if header.startswith(PNG_SIGNATURE) and len(header) == PNG_SIZE_END:  # too large: refused before decoding
        width, height = int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")
        if width * height > max_frame_px:
            return (
                NO_IMAGE,
                f"image file {path}: {width}x{height} px is larger than max_frame_px={max_frame_px}",
            )
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error as exc:
        return NO_IMAGE, f"unreadable image file {path}: {str(exc).strip()[-200:]}"
    if image is None or image.size == 0:
        return NO_IMAGE, f"unreadable image file {path}: not an image OpenCV can decode ({data.size} bytes)"
    height, width = image.shape[:2]
    if height * width > max_frame_px:
        return NO_IMAGE, (
            f"image file {path}: {width}x{height} px is larger than max_frame_px={max_frame_px}"
        )
    return _to_bgr(image), None


def _to_bgr(image: Any) -> Image:
    """Return a contiguous HxWx3 uint8 BGR array from what OpenCV decoded."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = cv2.convertScaleAbs(arr, alpha=255.0 / max(float(arr.max()), 1.0))
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        arr = cv2.cvtColor(arr, cv2.COLOR_GRAY2BGR)
    elif arr.shape[2] == 4:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(arr, dtype=np.uint8)


def _open_source(
    cfg: CameraConfig, kind: str, report: Callable[[str], None], extras: tuple[mpc.Connection, Counter]
) -> tuple[_Source | None, str, bool]:
    """Open the camera's source; return (source, "", False) or (None, error naming the camera, refused).

    ``refused``: the camera answered and refused its configuration (GenICam); ``extras``: the software
    triggers' pipe and the shared counters (GenICam).
    """
    if kind == "genicam":
        return open_genicam(cfg, *extras)
    source, error = _open_opencv(cfg, kind, report)
    return source, error, False


def _open_opencv(cfg: CameraConfig, kind: str, report: Callable[[str], None]) -> tuple[_Source | None, str]:
    """Open a source OpenCV reads; return (source, "") or (None, error message naming the camera)."""
    if kind == "folder":
        folder = Path(cfg.source)
        listing = folder.iterdir() if folder.is_dir() else iter(())
        files = sorted(p for p in listing if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            return None, f"camera {cfg.name}: folder {folder} missing or without image files"
        return _FolderSource(files, report, cfg.max_frame_px), ""
    if kind == "device":
        cap = cv2.VideoCapture(int(cfg.source))
    elif kind == "gstreamer":
        cap = cv2.VideoCapture(cfg.source, cv2.CAP_GSTREAMER)
    else:
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(cfg.open_timeout_s * MS_PER_S),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(cfg.read_timeout_s * MS_PER_S),
        ]  # fmt: skip
        cap = cv2.VideoCapture(cfg.source, cv2.CAP_FFMPEG, params)
    if not cap.isOpened():
        cap.release()
        return None, f"camera {cfg.name}: cannot open {kind} source {cfg.source!r}"
    return _CvSource(cap), ""


class _StopReader:
    """Child end of the stop signal: the parent closes its end of a pipe (or dies) to stop the child.

    Unlike a multiprocessing Event, a pipe stays usable by the parent when a child is killed mid-wait.
    """

    def __init__(self, conn: mpc.Connection) -> None:
        self.conn = conn

    def is_set(self) -> bool:
        return self.wait(0.0)

    def wait(self, timeout_s: float) -> bool:
        try:
            return self.conn.poll(timeout_s)
        except (OSError, EOFError):
            return True


def pacing_fps(cfg: CameraConfig, kind: str, reported_fps: float | None) -> float | None:
    """The rate a camera's reads are paced at, in frames/s; None when it is not paced at all.

    Live sources (devices, streams) and ``as_fast_as_possible`` files are never paced. A file or folder is
    paced at ``fps`` when given, else a file at the rate it reports (``FILE_FALLBACK_FPS`` when that is
    missing or absurd) and a folder at ``FOLDER_DEFAULT_FPS``.
    """
    if kind not in ("file", "folder") or cfg.as_fast_as_possible:
        return None
    if cfg.fps is not None:
        return cfg.fps
    if kind == "file":
        usable = (
            reported_fps is not None and math.isfinite(reported_fps) and 0.0 < reported_fps <= MAX_FILE_FPS
        )
        return reported_fps if usable else FILE_FALLBACK_FPS
    return FOLDER_DEFAULT_FPS


class _Child:
    """The capture loop running inside one camera's process."""

    def __init__(
        self,
        cfg: CameraConfig,
        channels: Channels,
        shared: tuple[Any, Any],
        clock: Clock,
        margin_s: float,
    ) -> None:
        self.cfg = cfg
        self.kind = cfg.resolved_kind()
        self.frames, self.events, stop_conn, self.triggers = channels
        self.stop = _StopReader(stop_conn)
        self.ints, self.floats = shared
        self.clock = clock
        self.margin_s = margin_s

    def arm(self, seconds: float) -> None:
        """Tell the parent's watchdog how long the next step may block."""
        self.floats[F_DEADLINE] = time.monotonic() + seconds + self.margin_s

    def emit(self, name: str, value: float, message: str = "") -> None:
        try:
            self.events.put_nowait((name, value, message[:EVENT_MESSAGE_MAX_CHARS]))
        except queue.Full:
            pass  # status events are advisory; the counters live in shared memory

    def run(self) -> None:
        """Open, read, and reopen with exponential backoff until stopped or a file source ends."""
        backoff = self.cfg.retry_initial_s
        reconnect = False
        while not self.stop.is_set():
            if reconnect:
                self.ints[I_RECONNECTS] += 1
            self.arm(self.cfg.open_timeout_s)
            report = lambda m: self.emit(EVENT_ERROR, 1.0, m)
            source, error, refused = _open_source(self.cfg, self.kind, report, (self.triggers, self.count))
            if source is None:
                self.ints[I_UP] = 0
                backoff = self.wait_backoff(backoff, error, OPENED_REFUSED if refused else OPENED_FAILED)
                reconnect = True
                continue
            self.ints[I_OPENED] = OPENED_OK
            self.ints[I_UP] = 1
            self.emit(EVENT_UP, 1.0)
            outcome, n_frames, error = self.read_loop(source, self.source_fps(source))
            source.close()
            if outcome == "end" and self.cfg.loop and n_frames > 0:
                reconnect = False  # a looping file restarts at once: still up, not a failure
                continue
            self.ints[I_UP] = 0
            if outcome == "stop":
                break
            if outcome == "end" and not self.cfg.loop:
                self.ints[I_ENDED] = 1
                self.emit(EVENT_ENDED, 1.0, f"camera {self.cfg.name}: source {self.cfg.source!r} ended")
                break
            backoff = self.wait_backoff(self.cfg.retry_initial_s if n_frames else backoff, error)
            reconnect = True
        self.floats[F_DEADLINE] = math.inf  # finished: flushing the channel may take as long as the consumer

    def count(self, slot: int, amount: int) -> None:
        """Add to one of the shared counters (single writer: this process)."""
        self.ints[slot] += amount

    def wait_backoff(self, backoff: float, error: str, opened: int | None = None) -> float:
        """Report the camera down, wait ``backoff`` seconds (or until stop) and return the next wait.

        ``opened``: how the attempt to open ended, published after the report (the parent reads it first).
        """
        self.emit(EVENT_DOWN, backoff, error)
        if opened is not None:
            self.ints[I_OPENED] = opened
        self.arm(backoff)
        self.stop.wait(backoff)
        return min(backoff * 2.0, self.cfg.retry_max_s)

    def source_fps(self, source: _Source) -> float | None:
        """Pacing rate in frames/s for file/folder sources, None for live or unpaced sources."""
        reported = float(source.cap.get(cv2.CAP_PROP_FPS)) if isinstance(source, _CvSource) else None
        return pacing_fps(self.cfg, self.kind, reported)

    def read_loop(self, source: _Source, fps: float | None) -> tuple[str, int, str]:
        """Read until stop ("stop"), end of a finite source ("end") or failure ("fail"); count frames."""
        period = 1.0 / fps if fps else 0.0
        next_due = time.monotonic()
        n_frames = 0
        timeout = self.cfg.read_timeout_s
        while not self.stop.is_set():
            if period:
                delay = next_due - time.monotonic()
                if delay > 0.0:
                    self.arm(delay)
                    if self.stop.wait(delay):
                        break
                next_due = max(next_due + period, time.monotonic() - period)  # no burst after a stall
            local = self.kind in ("file", "folder")
            self.arm(self.read_bound_s(local))
            started = time.monotonic()
            got = source.read()
            now = time.monotonic()
            if got.idle:
                continue
            if got.image is None:
                if local:
                    return "end", n_frames, ""
                return (
                    "fail",
                    n_frames,
                    got.fault or f"camera {self.cfg.name}: read failed on {self.cfg.source!r}",
                )
            self.publish(
                now, got.part_id, got.image, got.fault, got.meta
            )  # a frame that arrived has its place
            n_frames += 1
            if now - started > timeout and not local and self.kind != "genicam":  # genicam: checks itself
                return "fail", n_frames, f"camera {self.cfg.name}: no frame within read_timeout_s={timeout}"
        return "stop", n_frames, ""

    def read_bound_s(self, local: bool) -> float:
        """How long one read may block before the parent's watchdog takes the process as hung."""
        if local:
            return max(self.cfg.read_timeout_s, LOCAL_READ_BOUND_S)
        if self.kind == "genicam":
            return max(self.cfg.read_timeout_s, GENICAM_READ_BOUND_S)
        return self.cfg.read_timeout_s

    def publish(
        self,
        monotonic_at: float,
        part_id: str | None,
        image: Image,
        fault: str | None,
        meta: CaptureMeta | None = None,
    ) -> None:
        """Assign the next seq and enqueue; a full channel loses its oldest frame, never blocks."""
        seq = int(self.ints[I_SEQ])
        self.ints[I_SEQ] = seq + 1
        captured_at = meta.captured_at if meta is not None and meta.captured_at is not None else self.clock()
        item: FrameItem = (seq, captured_at, monotonic_at, part_id, image, fault, meta)
        self.floats[F_LAST_FRAME_AT] = item[1]
        for attempt in range(PUT_ATTEMPTS):
            try:
                self.frames.put_nowait(item)
                return
            except queue.Full:
                if attempt == PUT_ATTEMPTS - 1:
                    break
            try:
                self.frames.get(timeout=DROP_GET_TIMEOUT_S)
                self.ints[I_DROP_QUEUE_FULL] += 1
            except queue.Empty:
                continue  # the consumer emptied it meanwhile, or the feeder has not flushed yet
        self.ints[I_DROP_CHANNEL_BUSY] += 1


def child_main(
    cfg_json: str,
    channels: Channels,
    shared: tuple[Any, Any],
    clock: Clock,
    margin_s: float,
) -> None:
    """Entry point of a camera process (spawned: config travels as JSON)."""
    cv2.setNumThreads(1)
    cfg = CameraConfig.model_validate_json(cfg_json)
    child = _Child(cfg, channels, shared, clock, margin_s)
    try:
        child.run()
    except Exception as exc:
        child.emit(EVENT_ERROR, 1.0, f"camera {cfg.name}: capture process crashed: {exc!r}")
        channels[0].cancel_join_thread()  # unsent frames are counted lost by the parent
        raise
    parent = mp.parent_process()
    if parent is None or not parent.is_alive():
        channels[0].cancel_join_thread()  # nobody will drain the channel: do not hang at exit

"""Parent-side handle of one camera process: its channels, shared counters, watchdog and restarts."""

from __future__ import annotations

import multiprocessing.connection as mpc
import os
import queue
import threading
import time
from collections import deque
from multiprocessing.context import SpawnContext, SpawnProcess
from multiprocessing.queues import Queue as MpQueue
from typing import Any, TypeVar

from inspector.capture.child import child_main
from inspector.capture.genicam import TRIGGER_RECORD
from inspector.capture.shared import (
    CHILD_DROP_SLOTS,
    DROP_PENDING_FULL,
    DROP_PROCESS_RESTART,
    DROP_STOP_TIMEOUT,
    EVENT_DOWN,
    EVENT_ERROR,
    F_DEADLINE,
    F_LAST_FRAME_AT,
    I_ENDED,
    I_INCOMPLETE,
    I_LOST_PACKETS,
    I_OPENED,
    I_RECONNECTS,
    I_SEQ,
    I_UP,
    N_FLOATS,
    N_INTS,
    CameraStats,
    Clock,
    EventItem,
    FrameItem,
)
from inspector.config.camera import CameraConfig
from inspector.core.records import Frame

STARTUP_GRACE_S = 60.0  # a freshly spawned child may take this long to import and arm its watchdog
WAIT_SLICE_S = 0.1  # stop() re-checks the child this often
EVENT_QUEUE_SIZE = 64

_T = TypeVar("_T")


def _get_nowait(channel: MpQueue[_T] | None) -> _T | None:
    """One item from a channel, or None when it is empty, closed or at EOF (its child exited)."""
    if channel is None:
        return None
    try:
        return channel.get_nowait()
    except (queue.Empty, EOFError, OSError, ValueError):
        return None


class CameraProcess:
    """Parent-side handle of one camera: its process, channels, shared counters and watchdog.

    Each child incarnation gets fresh channels; after a kill they are abandoned unread (a killed writer may
    leave half a message), and the frames they held are counted lost.

    Args:
        config: The camera.
        ctx: A "spawn" multiprocessing context.
        clock: Wall clock stamped on frames; must be picklable (a module-level function).
        watchdog_margin_s: Slack on top of the child's own timeouts before it is killed as hung.
    """

    def __init__(
        self, config: CameraConfig, ctx: SpawnContext, clock: Clock, watchdog_margin_s: float
    ) -> None:
        self.config = config
        self.name = config.name
        self._ctx = ctx
        self._clock = clock
        self._margin_s = watchdog_margin_s
        self._ints: Any = ctx.RawArray("q", N_INTS)
        self._floats: Any = ctx.RawArray("d", N_FLOATS)
        self._lock = threading.RLock()
        self._frames: MpQueue[FrameItem] | None = None
        self._events: MpQueue[EventItem] | None = None
        self._stop_writer: mpc.Connection | None = None
        self._trigger_writer: mpc.Connection | None = None
        self._stopping = False
        self._stopped = False
        self._failed = False
        self._paused = False
        self._process: SpawnProcess | None = None
        self._pending: deque[Frame] = deque()
        self._parent_drops: dict[str, int] = {}
        self._restart_at: float | None = None  # monotonic time of a scheduled respawn
        self._restart_wait_s = config.retry_initial_s
        self._captured_at_restart = 0
        self.delivered = 0
        self.restarts = 0
        self.last_error = ""

    @property
    def pid(self) -> int | None:
        """Process id of the running child; None before start, after it exited or while awaiting restart."""
        proc = self._process
        return proc.pid if proc is not None and proc.is_alive() else None

    @property
    def ended(self) -> bool:
        """True once a finite source has ended (the child exits by itself)."""
        return bool(self._ints[I_ENDED])

    def start(self) -> None:
        """Spawn a child with fresh channels; seq and counters continue from shared memory."""
        if self._stopping:
            return
        frames: MpQueue[FrameItem] = self._ctx.Queue(self.config.queue_size)
        events: MpQueue[EventItem] = self._ctx.Queue(EVENT_QUEUE_SIZE)
        stop_reader, stop_writer = self._ctx.Pipe(duplex=False)
        trigger_reader, trigger_writer = self._ctx.Pipe(duplex=False)
        os.set_blocking(trigger_writer.fileno(), False)  # a child that stopped reading never blocks a trigger
        self._floats[F_DEADLINE] = time.monotonic() + STARTUP_GRACE_S
        channels = (frames, events, stop_reader, trigger_reader)
        process = self._ctx.Process(
            target=child_main,
            args=(self.config.model_dump_json(), channels, (self._ints, self._floats)),
            kwargs={"clock": self._clock, "margin_s": self._margin_s},
            name=f"camera-{self.name}",
            daemon=True,
        )
        process.start()
        # The child holds its own copies now; dropping ours makes a dead child read as EOF, not a hang.
        for conn in (
            getattr(frames, "_writer", None),
            getattr(events, "_writer", None),
            stop_reader,
            trigger_reader,
        ):
            if isinstance(conn, mpc.Connection):
                conn.close()
        with self._lock:
            self._frames, self._events, self._stop_writer = frames, events, stop_writer
            old, self._trigger_writer = self._trigger_writer, trigger_writer
            self._process = process
        if old is not None:
            old.close()

    def fire(self, trigger_seq: int, at: float) -> bool:
        """Ask the child to fire the camera's software trigger at wall-clock ``at`` for this trigger's seq.

        Returns False when the child cannot take it (not running, or not reading): the trigger's part then
        ends by its timeout, as for a camera that is down.
        """
        with self._lock:
            writer = self._trigger_writer
            if writer is None or not self.running:
                return False
            try:
                writer.send_bytes(TRIGGER_RECORD.pack(trigger_seq, at))
            except (OSError, ValueError):  # BlockingIOError (full), a closed pipe
                return False
        return True

    @property
    def opened(self) -> int:
        """How the child's latest attempt to open the source ended (``OPENED_*`` of capture.shared)."""
        return int(self._ints[I_OPENED])

    @property
    def paused(self) -> bool:
        """True between :meth:`pause` and :meth:`resume`: the camera captures nothing and is not restarted."""
        return self._paused

    def pause(self) -> None:
        """Stop capturing (the child finishes its read and exits) and do not restart until :meth:`resume`."""
        self._paused = True
        self._restart_at = None
        if self._stop_writer is not None:
            self._stop_writer.close()

    def give_up(self) -> None:
        """Stop capturing for good after a failure (restart budget spent): the camera reads ``down``."""
        self._failed = True
        self.pause()

    def resume(self, timeout_s: float) -> None:
        """Capture again with a new child (seq continues); a child still finishing is killed after ``timeout_s``."""
        if not self._paused or self._stopping or self._failed:
            return
        self._finish_child(timeout_s)
        self._paused = False
        self.start()

    def request_stop(self) -> None:
        """Ask the child to finish (non-blocking; closing the pipe wakes it)."""
        self._stopping = True
        if self._stop_writer is not None:
            self._stop_writer.close()

    @property
    def running(self) -> bool:
        """True while a child process is alive."""
        return self._process is not None and self._process.is_alive()

    def health(self) -> str:
        """Return "ok", "finished" (stopped or ended normally), "hung" (past its deadline) or "dead"."""
        proc = self._process
        if proc is None or self._frames is None:
            return "finished"
        if proc.is_alive():
            return "hung" if time.monotonic() > self._floats[F_DEADLINE] else "ok"
        if proc.exitcode == 0 and (self.ended or self._stopping or self._paused):
            return "finished"
        return "dead"

    def supervise(self) -> str | None:
        """Watchdog step: kill a hung or dead child, respawn it after a backoff; return why it was killed."""
        if self._paused:
            return None
        if self._restart_at is not None:
            if time.monotonic() >= self._restart_at:
                self._restart_at = None
                self.start()
            return None
        health = self.health()
        if health not in ("hung", "dead"):
            return None
        captured = int(self._ints[I_SEQ])
        if captured > self._captured_at_restart:  # frames flowed since the last restart: reset the backoff
            self._restart_wait_s = self.config.retry_initial_s
        self._captured_at_restart = captured
        self._kill(DROP_PROCESS_RESTART)
        self.restarts += 1
        wait_s = self._restart_wait_s
        self.last_error = f"camera {self.name}: capture process {health}, killed; restarting in {wait_s:g} s"
        self._restart_at = time.monotonic() + wait_s
        self._restart_wait_s = min(wait_s * 2.0, self.config.retry_max_s)
        return health

    def stop(self, timeout_s: float) -> None:
        """Stop the child, draining its channel into the pending buffer; kill it after ``timeout_s``."""
        self.request_stop()
        self._finish_child(timeout_s)
        self._stopped = True

    def _finish_child(self, timeout_s: float) -> None:
        """Wait for a child told to finish, draining its channel; kill it (stop_timeout) after ``timeout_s``."""
        proc = self._process
        deadline = time.monotonic() + timeout_s
        while proc is not None and proc.is_alive() and time.monotonic() < deadline:
            self._drain()
            proc.join(WAIT_SLICE_S)
        if proc is not None and proc.is_alive():
            self._kill(DROP_STOP_TIMEOUT)
        else:
            self._drain()

    def _kill(self, reason: str) -> None:
        proc = self._process
        if proc is not None:
            proc.kill()
            proc.join()
        with self._lock:
            self._frames = self._events = None  # abandoned unread
            if self._stop_writer is not None:
                self._stop_writer.close()
            accounted = self.delivered + len(self._pending) + sum(self.dropped_by_reason().values())
            lost = int(self._ints[I_SEQ]) - accounted
            if lost > 0:
                self._parent_drops[reason] = self._parent_drops.get(reason, 0) + lost
            self._ints[I_UP] = 0

    def _drain(self) -> None:
        with self._lock:
            limit = self.config.queue_size * 2
            while (item := _get_nowait(self._frames)) is not None:
                if len(self._pending) >= limit:
                    self._pending.popleft()
                    self._parent_drops[DROP_PENDING_FULL] = self._parent_drops.get(DROP_PENDING_FULL, 0) + 1
                self._pending.append(self._to_frame(item))

    def _to_frame(self, item: FrameItem) -> Frame:
        seq, captured_at, monotonic_at, part_id, image, fault, meta = item
        if meta is None:
            return Frame(self.name, seq, captured_at, monotonic_at, image, part_id, fault=fault)
        return Frame(
            self.name, seq, captured_at, monotonic_at, image, part_id, fault=fault, frame_id=meta.frame_id,
            camera_timestamp_ns=meta.camera_timestamp_ns, trigger_seq=meta.trigger_seq,
        )  # fmt: skip

    def take_one(self) -> Frame | None:
        """Return the oldest available frame (drained ones first) and count it delivered, or None."""
        with self._lock:
            if self._pending:
                frame = self._pending.popleft()
            elif (item := _get_nowait(self._frames)) is not None:
                frame = self._to_frame(item)
            else:
                return None
            self.delivered += 1
            return frame

    def reader(self) -> mpc.Connection | None:
        """The frame channel's readable end while the child runs, for multiprocessing.connection.wait()."""
        reader: mpc.Connection | None = getattr(self._frames, "_reader", None)
        return reader if self.running else None

    def poll_events(self) -> list[EventItem]:
        """Return the status events the child sent since the last call."""
        out: list[EventItem] = []
        with self._lock:
            while len(out) < EVENT_QUEUE_SIZE and (item := _get_nowait(self._events)) is not None:
                out.append(item)
        for name, _, message in out:
            if name in (EVENT_DOWN, EVENT_ERROR) and message:
                self.last_error = message
        return out

    def dropped_by_reason(self) -> dict[str, int]:
        """Frames dropped so far, by reason (child and parent side)."""
        drops = {reason: int(self._ints[slot]) for reason, slot in CHILD_DROP_SLOTS.items()}
        with self._lock:
            for reason, count in self._parent_drops.items():
                drops[reason] = drops.get(reason, 0) + count
        return drops

    def stats(self) -> CameraStats:
        """Snapshot of this camera's counters."""
        last = float(self._floats[F_LAST_FRAME_AT])
        return CameraStats(
            captured=int(self._ints[I_SEQ]),
            delivered=self.delivered,
            dropped_by_reason=self.dropped_by_reason(),
            reconnects=int(self._ints[I_RECONNECTS]),
            restarts=self.restarts,
            up=bool(self._ints[I_UP]),
            ended=self.ended,
            last_frame_at=last if last > 0.0 else None,
            last_error=self.last_error,
            paused=self._paused,
            stopping=self._stopping,
            stopped=self._stopped,
            failed=self._failed,
            incomplete=int(self._ints[I_INCOMPLETE]),
            lost_packets=int(self._ints[I_LOST_PACKETS]),
        )

"""Camera capture, parent side: one spawned process per camera feeding bounded, drop-oldest channels.

Design: each camera runs in its own "spawn" process (the parent imports torch, so no fork) that opens the
source, reads, and reconnects with exponential backoff. Frames travel through a bounded multiprocessing
Queue of ``queue_size``; when it is full the child removes the oldest frame itself (counted "queue_full"),
so capture never blocks on the consumer. Counters (seq, drops, reconnects, up) and a watchdog deadline live
in shared memory written only by the child, so they survive a killed child and need no messages. The
parent's monitor thread kills a child that passes its deadline (a hung read()) or died, counts the frames
it had in flight as "process_restart", and respawns it with fresh channels; seq continues from shared
memory. Stopping closes a pipe the child polls (unlike an Event, safe when a waiter was killed).

The loop inside a camera process lives in ``inspector.capture.child``, the parent's handle of one process
in ``inspector.capture.process``, and what both sides share in ``inspector.capture.shared``.
"""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.connection as mpc
import threading
import time
from collections.abc import Sequence

import cv2
import structlog

from inspector.capture.aravis import load_aravis
from inspector.capture.outages import EventLog
from inspector.capture.process import STARTUP_GRACE_S, CameraProcess
from inspector.capture.shared import (
    EVENT_CAPTURED,
    EVENT_DROPPED_PREFIX,
    EVENT_INCOMPLETE,
    EVENT_LOST_PACKETS,
    EVENT_RECONNECT,
    EVENT_RESTART,
    OPENED_NOT_YET,
    OPENED_REFUSED,
    CameraRefusedError,
    CameraStats,
    CaptureError,
    Clock,
    EventHook,
    StopSignal,
)
from inspector.config.camera import CameraConfig
from inspector.core.budget import RestartBudget
from inspector.core.records import Frame

WATCHDOG_MARGIN_S = 2.0  # slack on top of a child's own timeout before the parent kills it
MONITOR_INTERVAL_S = 0.05
WAIT_SLICE_S = 0.1  # get_frames re-checks stop and new channels this often
STOP_TIMEOUT_S = 5.0
REFUSAL_MESSAGE_WAIT_S = 5.0  # a refusal's message travels on the event channel, its flag in shared memory


def gstreamer_available() -> bool:
    """Return True when this OpenCV build has the GStreamer video backend."""
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return "YES" in line
    return False


class CaptureManager:
    """All cameras of the daemon: starts their processes, watches them and hands out frames fairly.

    Args:
        cameras: Camera configs; names must be unique.
        stop_event: The daemon's stop signal; when set, cameras are told to stop and get_frames stops waiting.
        clock: Wall clock stamped on frames (captured_at); must be picklable (module-level function).
        on_event: Optional hook ``(camera, event_name, value)`` called from the monitor thread; see EVENT_*.
        watchdog_margin_s: Slack in seconds on top of a child's open/read timeout before it is killed as hung.
        restart_budget: ``(restarts, window_s)`` allowed per camera process; past it :attr:`exhausted` says
            which camera, and the camera is no longer restarted (the daemon exits non-zero). None: no limit.
    """

    def __init__(
        self,
        cameras: Sequence[CameraConfig],
        stop_event: StopSignal,
        clock: Clock = time.time,
        *,
        on_event: EventHook | None = None,
        watchdog_margin_s: float = WATCHDOG_MARGIN_S,
        restart_budget: tuple[int, float] | None = None,
    ) -> None:
        names = [c.name for c in cameras]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"cameras: duplicate camera names {duplicates}")
        self._ctx = mp.get_context("spawn")
        self._cams = [CameraProcess(c, self._ctx, clock, watchdog_margin_s) for c in cameras]
        self._stop_event = stop_event
        self._on_event = on_event
        self._halt = threading.Event()
        self._service_lock = (
            threading.Lock()
        )  # the monitor's supervision against pause/resume from other threads
        self._monitor: threading.Thread | None = None
        self._rr = 0
        self._seen: dict[tuple[str, str], int] = {}
        self._budgets = {c.name: RestartBudget(*restart_budget) for c in cameras} if restart_budget else {}
        self.exhausted: str | None = None  # why a camera ran out of restarts (then it is not restarted)
        self.exhausted_camera: str | None = None
        self._log = structlog.stdlib.get_logger(__name__)
        self._events = EventLog(self._log)

    def start(self) -> None:
        """Spawn every camera process and the monitor thread; wait for each GenICam camera's first open.

        Raises:
            CaptureError: A camera needs GStreamer and this OpenCV lacks it, or Aravis and it is missing.
            CameraRefusedError: A GenICam camera answered and refused its configuration (named in the
                message); the cameras are stopped again.
        """
        for cam in self._cams:
            kind = cam.config.resolved_kind()
            if kind == "gstreamer" and not gstreamer_available():
                raise CaptureError(
                    f"camera {cam.name}: source kind gstreamer needs OpenCV built with GStreamer support; "
                    f"OpenCV {cv2.__version__} here has none (the opencv-python wheels ship without it)"
                )
            if kind == "genicam":
                try:
                    load_aravis()
                except CaptureError as exc:
                    raise CaptureError(f"camera {cam.name}: {exc}") from None
        for cam in self._cams:
            cam.start()
        self._monitor = threading.Thread(target=self._monitor_loop, name="capture-monitor", daemon=True)
        self._monitor.start()
        refused = self._first_opens()
        if refused:
            self.stop()
            raise CameraRefusedError("; ".join(refused))

    def _first_opens(self) -> list[str]:
        """Wait until every GenICam camera tried to open once; the refusals (reachable cameras saying no)."""
        genicam = [c for c in self._cams if c.config.resolved_kind() == "genicam"]
        bound = STARTUP_GRACE_S + max((c.config.open_timeout_s for c in genicam), default=0.0)
        deadline = time.monotonic() + bound
        while any(c.opened == OPENED_NOT_YET and c.running for c in genicam) and time.monotonic() < deadline:
            if self._stop_event.is_set() or self._halt.wait(MONITOR_INTERVAL_S):
                break
        refused = []
        for cam in genicam:
            if cam.opened == OPENED_REFUSED:
                refused.append(self._refusal(cam))
        return refused

    def _refusal(self, cam: CameraProcess) -> str:
        """The child's message naming the refused feature (sent just before it said so in shared memory)."""
        deadline = time.monotonic() + REFUSAL_MESSAGE_WAIT_S
        while "refused" not in cam.last_error and time.monotonic() < deadline:
            with self._service_lock:
                self._service_cameras(restart=False)
            self._halt.wait(MONITOR_INTERVAL_S)
        return cam.last_error or f"camera {cam.name}: the camera refused its configuration"

    def fire_trigger(self, camera: str, trigger_seq: int, at: float) -> bool:
        """Fire a GenICam camera's software trigger at wall-clock ``at`` for a trigger's seq (see
        :meth:`CameraProcess.fire`); False when the camera cannot take it now.

        Raises:
            CaptureError: unknown camera.
        """
        return self._camera(camera).fire(trigger_seq, at)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stop all cameras; frames still queued stay available to get_frames (final drain)."""
        self._halt.set()
        if self._monitor is not None:
            self._monitor.join()
        for cam in self._cams:
            cam.request_stop()
        for cam in self._cams:
            cam.stop(timeout_s)
        self._service_all(restart=False)

    def pause(self, camera: str) -> None:
        """Stop a camera capturing until :meth:`resume`; it is not restarted meanwhile.

        Raises:
            CaptureError: unknown camera.
        """
        cam = self._camera(camera)
        with self._service_lock:
            cam.pause()

    def resume(self, camera: str) -> None:
        """Let a paused camera capture again (a new process; seq continues).

        Raises:
            CaptureError: unknown camera.
        """
        cam = self._camera(camera)
        with self._service_lock:
            cam.resume(STOP_TIMEOUT_S)

    def _camera(self, name: str) -> CameraProcess:
        for cam in self._cams:
            if cam.name == name:
                return cam
        raise CaptureError(f"unknown camera {name!r} (known: {', '.join(c.name for c in self._cams)})")

    def pid(self, camera: str) -> int | None:
        """Process id of a camera's current child process."""
        return next((c.pid for c in self._cams if c.name == camera), None)

    def get_frames(self, max_items: int, timeout_s: float) -> list[Frame]:
        """Return up to ``max_items`` frames, round-robin over cameras, oldest first per camera.

        Waits up to ``timeout_s`` for the first frame, then returns what is available without waiting
        more. Returns an empty list on timeout, or at once when the stop event is set and nothing is queued.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            frames = self._take_round_robin(max_items)
            remaining = deadline - time.monotonic()
            if (
                frames
                or remaining <= 0.0
                or max_items <= 0
                or self._halt.is_set()
                or self._stop_event.is_set()
            ):
                return frames
            readers = [r for r in (c.reader() for c in self._cams) if r is not None]
            if readers:
                try:
                    mpc.wait(readers, timeout=min(remaining, WAIT_SLICE_S))
                    continue
                except (OSError, ValueError):  # a channel was closed by a restart meanwhile
                    pass
            self._halt.wait(min(remaining, MONITOR_INTERVAL_S))  # no camera running right now

    def _take_round_robin(self, max_items: int) -> list[Frame]:
        out: list[Frame] = []
        n = len(self._cams)
        active = [self._cams[(self._rr + i) % n] for i in range(n)]
        self._rr = (self._rr + 1) % max(n, 1)
        while active and len(out) < max_items:
            still: list[CameraProcess] = []
            for cam in active:
                if len(out) >= max_items:
                    break
                frame = cam.take_one()
                if frame is not None:
                    out.append(frame)
                    still.append(cam)
            active = still
        return out

    def stats(self) -> dict[str, CameraStats]:
        """Counters per camera name."""
        return {cam.name: cam.stats() for cam in self._cams}

    def _monitor_loop(self) -> None:
        while not self._halt.wait(MONITOR_INTERVAL_S):
            if self._stop_event.is_set():
                for cam in self._cams:
                    cam.request_stop()
            self._service_all(restart=not self._stop_event.is_set())

    def _service_all(self, restart: bool) -> None:
        with self._service_lock:
            self._service_cameras(restart)

    def _service_cameras(self, restart: bool) -> None:
        for cam in self._cams:
            for name, value, message in cam.poll_events():
                self._events.record(cam.name, name, value, message)
                self._emit(cam.name, name, value)
            self._emit_deltas(cam)
            if restart and (health := cam.supervise()) is not None:
                self._log.warning("camera_process_restart", camera=cam.name, health=health)
                self._emit(cam.name, EVENT_RESTART, 1.0)
                self._charge_restart(cam)

    def _charge_restart(self, cam: CameraProcess) -> None:
        """Count a restart against the camera's budget; past it, stop restarting and say so in exhausted."""
        budget = self._budgets.get(cam.name)
        if budget is None or budget.record(time.monotonic()) or self.exhausted is not None:
            return
        self.exhausted = (
            f"camera {cam.name}: capture process restarted more than {budget.describe()} ({cam.last_error})"
        )
        self.exhausted_camera = cam.name
        self._log.critical("camera_restart_budget_exhausted", camera=cam.name, budget=budget.describe())
        cam.give_up()  # no more respawns: the camera reads down, the daemon stops and exits non-zero

    def _emit_deltas(self, cam: CameraProcess) -> None:
        st = cam.stats()
        counters = {EVENT_CAPTURED: st.captured, EVENT_RECONNECT: st.reconnects}
        counters.update({EVENT_INCOMPLETE: st.incomplete, EVENT_LOST_PACKETS: st.lost_packets})
        counters.update({EVENT_DROPPED_PREFIX + r: n for r, n in st.dropped_by_reason.items()})
        for name, total in counters.items():
            delta = total - self._seen.get((cam.name, name), 0)
            if delta > 0:
                self._seen[(cam.name, name)] = total
                self._emit(cam.name, name, float(delta))

    def _emit(self, camera: str, name: str, value: float) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(camera, name, value)
        except Exception as exc:  # noqa: BLE001 - a metrics hook must not kill capture
            self._log.error("capture_on_event_failed", camera=camera, event_name=name, error=repr(exc))

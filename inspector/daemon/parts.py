"""Frames become parts: the product each frame is scored with, and triggers that pick frames of external cameras.

A free-running camera's frames all go on, stamped with the camera's active product. An external-trigger camera
keeps capturing, so a fresh frame is always at hand, but its frames only wait in a short ring: a trigger
(``camera``, ``part_id``, optional ``product`` and ``at``) takes the next place in that camera's sequence when it
is accepted, and picks the first frame captured at or after ``at + trigger_delay_ms``. A trigger that no frame
answers within ``trigger_timeout_ms`` after that becomes a frame with a ``fault``, which the worker turns into an
ERROR verdict for that part id, never silence. Triggers of one camera are answered in the order they arrived.

A trigger whose ``at`` lies outside ``[now - triggers.max_at_past_ms, now + triggers.max_at_future_ms]`` (a PLC
clock far off, a typo in the year) is an ERROR verdict at once: it neither waits for a frame of the future
(blocking every later trigger of its camera) nor takes a frame that belongs to another part. A part id already
waiting on the same camera is accepted (it gets its own seq and verdict), but logged and counted as a duplicate.

GenICam cameras pair frames and triggers their own way. With ``trigger_source = "software"`` an accepted trigger
fires the camera (through ``fire``) and is answered only by the frame that firing took (``Frame.trigger_seq``),
or that frame's fault. With a line trigger (the photo-eye wired to the camera), frames and triggers pair in
order: the oldest waiting trigger takes the oldest frame captured within ``pairing_window_ms`` of its pick time;
an older frame is a frame without a trigger (counted, logged, never scored), and a trigger whose window passed
without a frame is an ERROR verdict for its part id, so a missing or extra frame never shifts the part ids.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import structlog

from inspector.config.camera import CameraConfig
from inspector.config.triggers import TriggersConfig
from inspector.core.errors import InspectorError
from inspector.core.inputs import part_id_problem, quote
from inspector.core.records import NO_IMAGE, Frame
from inspector.daemon.pipeline import FrameSource
from inspector.daemon.products import ProductError, ProductRegistry
from inspector.ops.metrics import InspectorMetrics

MS_PER_S = 1000.0
MAX_RING_FRAMES = 256  # frames an external camera keeps waiting for triggers, at most
MAX_PENDING_TRIGGERS = 1024  # triggers waiting for a frame per camera, at most
REJECT_UNKNOWN_CAMERA = "unknown_camera"
REJECT_FREE_RUNNING = "free_running_camera"
REJECT_MALFORMED = "malformed"
REJECT_BACKLOG = "backlog_full"
REJECT_STOPPING = "stopping"
REJECT_MULTIPART = "multipart"
REJECT_REASONS = (
    REJECT_UNKNOWN_CAMERA,
    REJECT_FREE_RUNNING,
    REJECT_MALFORMED,
    REJECT_BACKLOG,
    REJECT_STOPPING,
    REJECT_MULTIPART,
)
STOPPING_FAULT = "the daemon stopped before a frame answered the trigger"
NOT_FIRED_FAULT = "the camera's process is not running: its software trigger could not be fired"
Pairing = Literal["time", "software", "line"]
TriggerFirer = Callable[[str, int, float], bool]  # (camera, trigger seq, wall-clock time to fire) -> sent


def pairing(camera: CameraConfig) -> Pairing:
    """How an external camera's frames answer triggers: by time, by software trigger, or in order (line)."""
    if camera.kind != "genicam":
        return "time"
    settings = camera.settings
    if settings.trigger_source == "software":
        return "software"
    return "line" if settings.line_triggered else "time"


class TriggerRejected(InspectorError):
    """A trigger that gets no place in any sequence (so no verdict); ``reason`` is one of REJECT_REASONS."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class TriggerAck:
    """An accepted trigger: the seq its verdict will carry, and the fault it will report, if any."""

    camera: str
    seq: int
    part_id: str
    product: str
    fault: str | None = None
    duplicate: bool = False  # another trigger with this part id still waits on the camera


@dataclass(frozen=True)
class _Pending:
    seq: int
    part_id: str
    product: str
    pick_at: float  # wall clock: the first frame captured at or after this answers the trigger
    fault: str | None


class PartSource:
    """The pipeline's frame source over capture: stamps products and answers triggers (see the module doc).

    ``submit`` may be called from any thread (the trigger socket, the control socket); ``get_frames`` only
    from the pipeline thread.
    """

    def __init__(
        self,
        capture: FrameSource,
        cameras: Sequence[CameraConfig],
        products: ProductRegistry,
        metrics: InspectorMetrics | None = None,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        triggers: TriggersConfig | None = None,
        fire: TriggerFirer | None = None,
    ) -> None:
        """Wrap capture for these cameras (clocks comparable with ``Frame.captured_at`` / ``monotonic_at``).

        Accepted, rejected, duplicate and timed-out triggers are counted in ``metrics``; ``triggers`` gives
        the window a trigger's ``at`` must fall in (default: the ``[triggers]`` defaults); ``fire`` fires a
        software-triggered camera for an accepted trigger.
        """
        window = triggers if triggers is not None else TriggersConfig()
        self._max_past_s = window.max_at_past_ms / MS_PER_S
        self._max_future_s = window.max_at_future_ms / MS_PER_S
        self._capture = capture
        self._metrics = metrics
        self._cameras = {c.name: c for c in cameras}
        self._products = products
        self._wall = wall_clock
        self._monotonic = monotonic
        self._fire = fire
        self._pairing = {c.name: pairing(c) for c in cameras}
        self._lock = threading.Lock()
        external = [c.name for c in cameras if c.trigger == "external"]
        self._next_seq = dict.fromkeys(external, 0)
        self._pending: dict[str, deque[_Pending]] = {name: deque() for name in external}
        self._waiting_ids: dict[str, Counter[str]] = {name: Counter() for name in external}
        self._ring: dict[str, deque[Frame]] = {name: deque(maxlen=MAX_RING_FRAMES) for name in external}
        self._closed = False
        self._log = structlog.stdlib.get_logger(__name__)

    def submit(
        self,
        camera: str,
        part_id: str,
        product: str | None = None,
        at: float | None = None,
        problem: str = "",
    ) -> TriggerAck:
        """Accept a trigger: it takes the camera's next seq and will end in exactly one verdict.

        Args:
            camera: an external-trigger camera.
            part_id: the part's id (1 to PART_ID_MAX_CHARS characters).
            product: switch the camera to this product first (from this part on).
            at: wall-clock time of the trigger (default: now).
            problem: what was wrong with the rest of the message: the part still gets an ERROR verdict.

        Returns:
            The seq and product of the verdict to come (and its fault, when it can only be an ERROR).

        Raises:
            TriggerRejected: unknown or free-running camera, unusable part id, or too many waiting triggers.
        """
        try:
            ack = self._accept(camera, part_id, product, at, problem)
        except TriggerRejected as exc:
            self.count_rejected(exc.reason)
            raise
        if self._metrics is not None:
            self._metrics.triggers.labels(camera=camera).inc()
            if ack.duplicate:
                self._metrics.triggers_duplicate.labels(camera=camera).inc()
        if ack.duplicate:
            self._log.warning("trigger_duplicate_part_id", camera=camera, seq=ack.seq, part_id=part_id)
        return ack

    def count_rejected(self, reason: str) -> None:
        """Count a trigger that got no place in a sequence (one of REJECT_REASONS)."""
        if self._metrics is not None:
            self._metrics.triggers_rejected.labels(reason=reason).inc()

    def close(self) -> None:
        """Take no more triggers; the ones waiting are answered (ERROR, the daemon is stopping) on the next call."""
        with self._lock:
            self._closed = True

    def _accept(
        self, camera: str, part_id: str, product: str | None, at: float | None, problem: str
    ) -> TriggerAck:
        if self._closed:
            raise TriggerRejected(REJECT_STOPPING, "the daemon is stopping: no more triggers")
        cam = self._cameras.get(camera)
        if cam is None:
            raise TriggerRejected(
                REJECT_UNKNOWN_CAMERA, f"unknown camera {quote(camera)} (known: {', '.join(self._cameras)})"
            )
        if cam.trigger != "external":
            raise TriggerRejected(
                REJECT_FREE_RUNNING,
                f'camera {camera} is free-running (trigger = "free_run"): its frames need no trigger',
            )
        id_problem = part_id_problem(part_id)
        if id_problem:
            raise TriggerRejected(REJECT_MALFORMED, id_problem)
        now = self._wall()
        fault = problem or (self._outside_window(at, now) if at is not None else None)
        if product is not None and fault is None:
            try:
                self._products.set_active(camera, product)
            except ProductError as exc:
                fault = str(exc)
        # A trigger that can only be an ERROR takes no frame: it is answered at once, stamped now.
        pick_at = now if fault or at is None else at
        pick_at += 0.0 if fault else cam.trigger_delay_ms / MS_PER_S
        with self._lock:
            if len(self._pending[camera]) >= MAX_PENDING_TRIGGERS:
                raise TriggerRejected(
                    REJECT_BACKLOG, f"camera {camera}: {MAX_PENDING_TRIGGERS} triggers already wait"
                )
            seq = self._next_seq[camera]
            self._next_seq[camera] = seq + 1
            if fault is None and self._pairing[camera] == "software":
                fired = self._fire is not None and self._fire(camera, seq, pick_at)
                fault = None if fired else NOT_FIRED_FAULT
            chosen = self._products.active(camera) if fault is None or product is None else product
            duplicate = self._waiting_ids[camera][part_id] > 0
            self._waiting_ids[camera][part_id] += 1
            self._pending[camera].append(_Pending(seq, part_id, chosen, pick_at, fault))
        return TriggerAck(camera, seq, part_id, chosen, fault, duplicate)

    def _outside_window(self, at: float, now: float) -> str | None:
        """Why a trigger's ``at`` cannot be this part's time, or None when it is within the window."""
        if at > now + self._max_future_s:
            return (
                f"at is {at - now:.3f} s in the future: more than triggers.max_at_future_ms="
                f"{self._max_future_s * MS_PER_S:g} (is the PLC's clock on NTP?)"
            )
        if at < now - self._max_past_s:
            return (
                f"at is {now - at:.3f} s in the past: more than triggers.max_at_past_ms="
                f"{self._max_past_s * MS_PER_S:g} (its frame is gone; is the PLC's clock on NTP?)"
            )
        return None

    def get_frames(self, max_items: int, timeout_s: float) -> list[Frame]:
        """At most ``max_items`` frames of parts: free-running frames, and triggers answered or timed out.

        Frames of external cameras go to their ring and take no room; triggers beyond the room are answered
        on a later call (their frames stay in the ring until their timeout).
        """
        wait = min(timeout_s, self._time_to_next_deadline())
        out: list[Frame] = []
        for frame in self._capture.get_frames(max_items, wait):
            if frame.camera in self._ring:
                self._ring[frame.camera].append(frame)
            else:
                out.append(dataclasses.replace(frame, product=self._products.active(frame.camera)))
        for camera in self._ring:
            out += self._answer(camera, max_items - len(out))
        return out

    def pending(self, camera: str) -> int:
        """Triggers of an external camera still waiting for a frame."""
        with self._lock:
            return len(self._pending.get(camera, ()))

    def _time_to_next_deadline(self) -> float:
        with self._lock:
            firsts = [(name, q[0]) for name, q in self._pending.items() if q]
        if not firsts:
            return float("inf")
        now = self._wall()
        deadlines = [p.pick_at + self._cameras[name].trigger_timeout_ms / MS_PER_S for name, p in firsts]
        return max(0.0, min(deadlines) - now)

    def _answer(self, camera: str, room: int) -> list[Frame]:
        """Up to ``room`` triggers of one camera answered now, in order: by a frame, their fault or their timeout."""
        cam, ring = self._cameras[camera], self._ring[camera]
        out: list[Frame] = []
        timeout_s = cam.trigger_timeout_ms / MS_PER_S
        while len(out) < room:
            with self._lock:
                queue = self._pending[camera]
                trigger = queue[0] if queue else None
            if trigger is None:
                break
            if self._closed and not trigger.fault:
                trigger = dataclasses.replace(trigger, fault=STOPPING_FAULT)
            frame, settled = (None, True) if trigger.fault else self._pick(camera, trigger)
            late = self._wall() > trigger.pick_at + timeout_s
            if not settled and not late:
                break
            with self._lock:
                queue.popleft()
                self._waiting_ids[camera][trigger.part_id] -= 1
                if not self._waiting_ids[camera][trigger.part_id]:
                    del self._waiting_ids[camera][trigger.part_id]
            out.append(self._part(camera, trigger, frame, timeout_s))
        horizon = self._wall() - timeout_s  # an older frame can no longer answer any trigger
        while ring and ring[0].captured_at < horizon:
            self._unpaired(camera, ring.popleft())
        return out

    def _pick(self, camera: str, trigger: _Pending) -> tuple[Frame | None, bool]:
        """The frame answering a trigger now, and whether the trigger is settled (answered or unanswerable)."""
        ring, mode = self._ring[camera], self._pairing[camera]
        if mode == "time":
            frame = next((f for f in ring if f.captured_at >= trigger.pick_at), None)
            return frame, frame is not None
        if mode == "software":
            frame = next((f for f in ring if f.trigger_seq == trigger.seq), None)
            if frame is not None:
                ring.remove(frame)
            return frame, frame is not None
        window_s = self._cameras[camera].settings.pairing_window_ms / MS_PER_S
        while ring and ring[0].captured_at < trigger.pick_at - window_s:
            self._unpaired(camera, ring.popleft())
        if not ring:
            return None, False
        if ring[0].captured_at <= trigger.pick_at + window_s:
            return ring.popleft(), True
        return None, True  # the next frame came after this trigger's window: this trigger has none

    def _unpaired(self, camera: str, frame: Frame) -> None:
        """A frame of a line-triggered camera that no trigger claimed: counted and logged, never scored."""
        if self._pairing[camera] != "line":
            return
        self._log.warning("frame_without_trigger", camera=camera, frame_id=frame.frame_id)
        if self._metrics is not None:
            self._metrics.frames_unpaired.labels(camera=camera).inc()

    def _part(self, camera: str, trigger: _Pending, frame: Frame | None, timeout_s: float) -> Frame:
        if frame is not None:
            return dataclasses.replace(
                frame, seq=trigger.seq, part_id=trigger.part_id, product=trigger.product
            )
        window = f"genicam.pairing_window_ms={self._cameras[camera].settings.pairing_window_ms:g}"
        if self._pairing[camera] != "line":
            window = f"trigger_timeout_ms={timeout_s * MS_PER_S:g}"
        fault = trigger.fault or f"no frame captured within {window} of the trigger's pick time"
        if not trigger.fault:
            self._log.warning("trigger_timeout", camera=camera, seq=trigger.seq, part_id=trigger.part_id)
            if self._metrics is not None:
                self._metrics.trigger_timeouts.labels(camera=camera).inc()
        return Frame(
            camera,
            trigger.seq,
            trigger.pick_at,
            self._monotonic(),
            NO_IMAGE,
            trigger.part_id,
            trigger.product,
            fault,
        )

"""Frames become parts: the product each frame is scored with, and triggers that pick frames of external cameras.

A free-running camera's frames all go on, stamped with the camera's active product. An external-trigger camera
keeps capturing, so a fresh frame is always at hand, but its frames only wait in a short ring: a trigger
(``camera``, ``part_id``, optional ``product`` and ``at``) takes the next place in that camera's sequence when it
is accepted, and picks the first frame captured at or after ``at + trigger_delay_ms``. A trigger that no frame
answers within ``trigger_timeout_ms`` after that becomes a frame with a ``fault``, which the worker turns into an
ERROR verdict for that part id, never silence. Triggers of one camera are answered in the order they arrived.

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
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import structlog

from inspector.config.camera import CameraConfig
from inspector.core.errors import InspectorError
from inspector.core.names import PART_ID_MAX_CHARS
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
REJECT_REASONS = (
    REJECT_UNKNOWN_CAMERA,
    REJECT_FREE_RUNNING,
    REJECT_MALFORMED,
    REJECT_BACKLOG,
    REJECT_STOPPING,
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
        fire: TriggerFirer | None = None,
    ) -> None:
        """Wrap capture for these cameras (clocks comparable with ``Frame.captured_at`` / ``monotonic_at``).

        Accepted, rejected and timed-out triggers are counted in ``metrics``; ``fire`` fires a software-triggered
        camera for an accepted trigger.
        """
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
                REJECT_UNKNOWN_CAMERA, f"unknown camera {camera!r} (known: {', '.join(self._cameras)})"
            )
        if cam.trigger != "external":
            raise TriggerRejected(
                REJECT_FREE_RUNNING,
                f'camera {camera} is free-running (trigger = "free_run"): its frames need no trigger',
            )
        if not isinstance(part_id, str) or not 0 < len(part_id) <= PART_ID_MAX_CHARS:
            raise TriggerRejected(
                REJECT_MALFORMED, f"part_id must be a string of 1 to {PART_ID_MAX_CHARS} characters"
            )
        fault = problem or None
        if product is not None and fault is None:
            try:
                self._products.set_active(camera, product)
            except ProductError as exc:
                fault = str(exc)
        pick_at = (self._wall() if at is None else at) + cam.trigger_delay_ms / MS_PER_S
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
            self._pending[camera].append(_Pending(seq, part_id, chosen, pick_at, fault))
        return TriggerAck(camera, seq, part_id, chosen, fault)

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

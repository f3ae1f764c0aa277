"""The PLC's view of results: per camera a bounded list of results valid until acknowledged, and readiness."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from inspector.bus.wire import Heartbeat, VerdictHeader, parse_rfc3339
from inspector.core.names import VERDICTS

NOT_READY_SILENT = "NotReady: no heartbeat from the daemon"
READY = "Ready"


@dataclass(frozen=True)
class Result:
    """One part's result as the PLC reads it; ``result_id`` counts per camera from 1."""

    result_id: int
    part_id: str
    verdict: str
    score: float
    threshold: float
    defect_area_px: int
    defect_count: int
    largest_defect_area_px: int  # frame pixels of the largest defect region (0: none)
    seq: int
    boot_id: str
    gallery: str
    product: str
    captured_at: float
    published_at: float
    error: str
    valid: bool = True  # False once the daemon went silent after it: the PLC must not act on it

    @property
    def accept(self) -> bool:
        """What the PLC may do with the part: True only for a valid PASS."""
        return self.valid and self.verdict == "PASS"


@dataclass
class CameraBook:
    """One camera's results and counters."""

    pending: deque[Result] = field(default_factory=deque)
    last: Result | None = None
    next_id: int = 1
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(VERDICTS, 0))
    overwritten: int = 0
    camera_state: str = "down"
    product: str = ""


def result_of(header: VerdictHeader, result_id: int) -> Result:
    """The PLC record of a verdict header."""
    return Result(
        result_id=result_id,
        part_id=header.part_id or "",
        verdict=header.verdict,
        score=header.score if header.score is not None else float("nan"),
        threshold=header.threshold if header.threshold is not None else float("nan"),
        defect_area_px=header.defect_area_px or 0,
        defect_count=header.defect_count or 0,
        largest_defect_area_px=header.defects[0].area_px if header.defects else 0,
        seq=header.seq,
        boot_id=header.boot_id,
        gallery=header.gallery or "",
        product=header.product or "",
        captured_at=parse_rfc3339(header.captured_at),
        published_at=parse_rfc3339(header.published_at),
        error=header.error or "",
    )


class ResultBook:
    """Results valid for one part each: kept until the PLC acknowledges them (or overwritten, counted), and
    the daemon's readiness from its heartbeats. Thread-safe; pure apart from the injected clock.

    A silence longer than ``silence_budget_s`` (no heartbeat) makes every camera not ready and marks the
    results held so far invalid, so a PLC never reads a stale PASS as a good part.
    """

    def __init__(
        self, cameras: list[str], capacity: int, silence_budget_s: float, clock: Callable[[], float]
    ):
        """Start with no result, not ready (no heartbeat seen yet)."""
        self._books = {name: CameraBook() for name in cameras}
        self._capacity = capacity
        self._budget_s = silence_budget_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last_heartbeat: float | None = None
        self.daemon_state = "starting"
        self.worker_alive = False
        self.boot_id = ""

    @property
    def cameras(self) -> list[str]:
        """Camera names."""
        return list(self._books)

    def add(self, header: VerdictHeader) -> Result | None:
        """Record a verdict; None for a camera this book does not know."""
        with self._lock:
            book = self._books.get(header.camera)
            if book is None:
                return None
            result = result_of(header, book.next_id)
            book.next_id += 1
            book.counts[result.verdict] += 1
            book.pending.append(result)
            if len(book.pending) > self._capacity:
                book.pending.popleft()
                book.overwritten += 1
            book.last = result
            if result.product:
                book.product = result.product
            return result

    def acknowledge(self, camera: str, result_id: int) -> bool:
        """Forget one pending result; False when it is not pending (already acknowledged or overwritten)."""
        with self._lock:
            book = self._books[camera]
            kept = [r for r in book.pending if r.result_id != result_id]
            found = len(kept) != len(book.pending)
            book.pending = deque(kept)
            return found

    def heartbeat(self, hb: Heartbeat) -> None:
        """Note a heartbeat: the daemon's state and each camera's."""
        with self._lock:
            self._last_heartbeat = self._clock()
            self.daemon_state, self.boot_id, self.worker_alive = hb.state, hb.boot_id, hb.worker_alive
            for name, cam in hb.cameras.items():
                if name in self._books:
                    self._books[name].camera_state = cam.state

    def silent(self) -> bool:
        """True when no heartbeat arrived within the budget (or none ever did)."""
        with self._lock:
            last = self._last_heartbeat
        return last is None or self._clock() - last > self._budget_s

    def check_silence(self) -> bool:
        """Invalidate held results when the daemon went silent; returns whether it is silent."""
        silent = self.silent()
        if silent:
            with self._lock:
                for book in self._books.values():
                    book.pending = deque(replace(r, valid=False) for r in book.pending)
                    if book.last is not None:
                        book.last = replace(book.last, valid=False)
        return silent

    def state(self, camera: str) -> tuple[bool, str]:
        """(ready, state text) of a camera: ready only with heartbeats, the daemon ready, its worker alive, the camera up."""
        if self.silent():
            return False, NOT_READY_SILENT
        with self._lock:
            daemon, cam, worker = self.daemon_state, self._books[camera].camera_state, self.worker_alive
        if daemon not in ("ready", "degraded"):
            return False, f"NotReady: daemon {daemon}"
        if not worker:
            return False, "NotReady: the model worker makes no progress"
        if cam != "up":
            return False, f"NotReady: camera {cam}"
        return True, READY

    def snapshot(self, camera: str) -> CameraBook:
        """A copy of a camera's book."""
        with self._lock:
            book = self._books[camera]
            return replace(book, pending=deque(book.pending), counts=dict(book.counts))

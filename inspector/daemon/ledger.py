"""The frame ledger: every accepted frame ends in exactly one published verdict or one counted drop."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from inspector.core.records import Frame
from inspector.ops.metrics import InspectorMetrics

DROP_SHUTDOWN_TIMEOUT = "shutdown_timeout"


@dataclass(frozen=True)
class CameraTally:
    """Ledger counts of one camera: accepted == published + dropped + outstanding."""

    accepted: int
    published: dict[str, int]
    dropped: dict[str, int]
    outstanding: int
    last_seq: int | None

    @property
    def published_total(self) -> int:
        """Verdicts published, all verdicts together."""
        return sum(self.published.values())


class FrameLedger:
    """Accounts for every accepted frame: it ends in exactly one published verdict or one counted drop.

    Thread-safe. After :meth:`abandon` the ledger is closed: frames still outstanding are counted as
    dropped, and a late attempt to publish one of them is refused, so nothing is ever counted twice.
    """

    def __init__(self, metrics: InspectorMetrics | None = None) -> None:
        """Create an empty, open ledger; drops are also counted in ``inspector_frames_dropped_total``."""
        self._metrics = metrics
        self._lock = threading.Lock()
        self._outstanding: dict[tuple[str, int], Frame] = {}
        self._accepted: dict[str, int] = {}
        self._published: dict[str, dict[str, int]] = {}
        self._dropped: dict[str, dict[str, int]] = {}
        self._last_seq: dict[str, int] = {}
        self._closed = False

    def accept(self, frame: Frame) -> bool:
        """Take responsibility for a frame. False (and counted dropped) when the ledger is closed."""
        with self._lock:
            self._accepted[frame.camera] = self._accepted.get(frame.camera, 0) + 1
            if self._closed:
                self._count_drop(frame.camera, DROP_SHUTDOWN_TIMEOUT)
                return False
            self._outstanding[(frame.camera, frame.seq)] = frame
            return True

    def claim(self, frame: Frame) -> bool:
        """Claim an outstanding frame for publishing; False when it was abandoned (then do not publish)."""
        with self._lock:
            return self._outstanding.pop((frame.camera, frame.seq), None) is not None

    def published(self, frame: Frame, verdict: str) -> None:
        """Record that a claimed frame's verdict was handed to the bus."""
        with self._lock:
            counts = self._published.setdefault(frame.camera, {})
            counts[verdict] = counts.get(verdict, 0) + 1
            self._last_seq[frame.camera] = max(frame.seq, self._last_seq.get(frame.camera, -1))

    def drop(self, frame: Frame, reason: str) -> bool:
        """Count an outstanding frame as dropped for ``reason``; False (not counted) if it was not outstanding."""
        with self._lock:
            if self._outstanding.pop((frame.camera, frame.seq), None) is None:
                return False
            self._count_drop(frame.camera, reason)
            return True

    def drop_claimed(self, frame: Frame, reason: str) -> None:
        """Count a frame claimed by :meth:`claim` (e.g. the bus refused it) as dropped for ``reason``."""
        with self._lock:
            self._count_drop(frame.camera, reason)

    def _count_drop(self, camera: str, reason: str) -> None:
        counts = self._dropped.setdefault(camera, {})
        counts[reason] = counts.get(reason, 0) + 1
        if self._metrics is not None:
            self._metrics.frames_dropped.labels(camera=camera, reason=reason).inc()

    def abandon(self, reason: str) -> list[Frame]:
        """Close the ledger and count every outstanding frame as dropped for ``reason``; return them."""
        with self._lock:
            self._closed = True
            frames = sorted(self._outstanding.values(), key=lambda f: (f.camera, f.seq))
            self._outstanding.clear()
            for frame in frames:
                self._count_drop(frame.camera, reason)
            return frames

    @property
    def outstanding(self) -> int:
        """Frames accepted but not yet published or dropped."""
        with self._lock:
            return len(self._outstanding)

    def tally(self) -> dict[str, CameraTally]:
        """Counts per camera."""
        with self._lock:
            cameras = sorted({*self._accepted, *self._published, *self._dropped})
            waiting = [cam for cam, _ in self._outstanding]
            return {
                cam: CameraTally(
                    accepted=self._accepted.get(cam, 0),
                    published=dict(self._published.get(cam, {})),
                    dropped=dict(self._dropped.get(cam, {})),
                    outstanding=waiting.count(cam),
                    last_seq=self._last_seq.get(cam),
                )
                for cam in cameras
            }

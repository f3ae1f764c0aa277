"""The results ring: the latest published outcomes per camera, in memory, bounded by count and by bytes."""

from __future__ import annotations

import threading
from collections import OrderedDict, deque

from inspector.core.records import Outcome

MIB = 1 << 20


def outcome_bytes(outcome: Outcome) -> int:
    """Memory the ring holds for an outcome: its frame, crop, map and mask arrays."""
    arrays = (outcome.frame.image, outcome.crop, outcome.anomaly_map, outcome.mask)
    return sum(a.nbytes for a in arrays if a is not None)


class ResultsRing:
    """Keeps references to the newest outcomes (nothing is copied or encoded on the pipeline's thread).

    At most ``per_camera`` outcomes per camera and ``max_mb`` MiB in all; the oldest leave first. Only
    published outcomes (with their bus header) are kept, keyed by (camera, seq) of the current daemon run.
    """

    name = "results"

    def __init__(self, per_camera: int, max_mb: float) -> None:
        """Create an empty ring."""
        self._per_camera = per_camera
        self._max_bytes = int(max_mb * MIB)
        self._lock = threading.Lock()
        self._by_camera: dict[str, deque[Outcome]] = {}
        self._all: OrderedDict[tuple[str, int], Outcome] = OrderedDict()
        self._bytes = 0

    @property
    def held_bytes(self) -> int:
        """Bytes of the arrays held."""
        with self._lock:
            return self._bytes

    def deliver(self, outcome: Outcome) -> None:
        """Keep a published outcome; forget the oldest beyond the bounds. O(1) apart from evictions."""
        if outcome.published is None:
            return
        size = outcome_bytes(outcome)
        with self._lock:
            ring = self._by_camera.setdefault(outcome.camera, deque())
            key = (outcome.camera, outcome.seq)
            if key in self._all:
                self._forget(key)
            ring.append(outcome)
            self._all[key] = outcome
            self._bytes += size
            while len(ring) > self._per_camera:
                self._forget((ring[0].camera, ring[0].seq))
            while self._bytes > self._max_bytes and len(self._all) > 1:
                self._forget(next(iter(self._all)))

    def _forget(self, key: tuple[str, int]) -> None:
        """Drop one outcome (caller holds the lock)."""
        outcome = self._all.pop(key)
        self._by_camera[key[0]].remove(outcome)
        self._bytes -= outcome_bytes(outcome)

    def find(self, camera: str, seq: int) -> Outcome | None:
        """The outcome of ``seq`` on ``camera`` if it is still in memory."""
        with self._lock:
            return self._all.get((camera, seq))

    def latest(self, camera: str) -> Outcome | None:
        """The camera's newest outcome in memory."""
        with self._lock:
            ring = self._by_camera.get(camera)
            return ring[-1] if ring else None

    def close(self) -> None:
        """Let go of every outcome."""
        with self._lock:
            self._by_camera.clear()
            self._all.clear()
            self._bytes = 0

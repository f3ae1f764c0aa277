"""Micro-batching of frames from all cameras: size- or age-triggered batches, deadline-expired frames split off."""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Iterable

from inspector.config.batching import BatchingConfig
from inspector.core.records import Frame

MS_PER_S = 1000.0
CAPACITY_BATCHES = 4  # the batcher holds at most this many full batches; the capture queues buffer the rest


class Batcher:
    """Holds accepted frames until the model worker takes them, oldest first.

    A batch is due when ``max_batch`` frames wait, or when the oldest waiting frame was captured at least
    ``max_wait_ms`` ago. A frame captured more than ``deadline_ms`` ago is never batched: it is returned
    by :meth:`take_expired` so that the caller publishes an explicit TIMEOUT verdict for it.

    Ages are measured from ``Frame.monotonic_at`` (``time.monotonic()`` in the camera process, which is
    the same system-wide clock on Linux), so the injected clock must be that clock in production.
    Not thread-safe: one pipeline thread owns it.
    """

    def __init__(
        self,
        config: BatchingConfig,
        clock: Callable[[], float] = time.monotonic,
        capacity: int | None = None,
    ) -> None:
        """Create an empty batcher.

        Args:
            config: the ``[batching]`` section.
            clock: monotonic clock in seconds, comparable with ``Frame.monotonic_at``.
            capacity: most frames held; default ``CAPACITY_BATCHES * max_batch``.

        Raises:
            ValueError: capacity smaller than ``max_batch``.
        """
        self._config = config
        self._clock = clock
        self._capacity = capacity if capacity is not None else CAPACITY_BATCHES * config.max_batch
        if self._capacity < config.max_batch:
            raise ValueError(
                f"batcher capacity {self._capacity} is smaller than batching.max_batch {config.max_batch}"
            )
        self._frames: deque[Frame] = deque()

    def __len__(self) -> int:
        """Frames waiting."""
        return len(self._frames)

    def depth_by_camera(self) -> dict[str, int]:
        """Frames waiting per camera (safe from another thread: it counts a snapshot, taken in one step)."""
        return dict(Counter(f.camera for f in list(self._frames)))

    @property
    def capacity(self) -> int:
        """Most frames held at once."""
        return self._capacity

    @property
    def room(self) -> int:
        """How many more frames :meth:`add` accepts without evicting any."""
        return self._capacity - len(self._frames)

    def age_s(self, frame: Frame) -> float:
        """Seconds since ``frame`` was captured, by the injected clock."""
        return self._clock() - frame.monotonic_at

    def add(self, frames: Iterable[Frame]) -> list[Frame]:
        """Queue frames in arrival order.

        Returns:
            Frames evicted (oldest first) because the batcher was full; the caller must account for each
            (the pipeline pulls at most :attr:`room` frames, so this stays empty in normal operation).
        """
        evicted: list[Frame] = []
        for frame in frames:
            if len(self._frames) >= self._capacity:
                evicted.append(self._frames.popleft())
            self._frames.append(frame)
        return evicted

    def take_expired(self) -> list[Frame]:
        """Remove and return every waiting frame older than ``deadline_ms`` (they get TIMEOUT verdicts)."""
        deadline_s = self._config.deadline_ms / MS_PER_S
        now = self._clock()
        expired = [f for f in self._frames if now - f.monotonic_at > deadline_s]
        if expired:
            self._frames = deque(f for f in self._frames if now - f.monotonic_at <= deadline_s)
        return expired

    def _oldest_capture(self) -> float:
        return min(f.monotonic_at for f in self._frames)

    def is_due(self, flush: bool = False) -> bool:
        """True when a batch should be sent now (``flush`` sends any waiting frame, e.g. at shutdown)."""
        if not self._frames:
            return False
        if flush or len(self._frames) >= self._config.max_batch:
            return True
        return self._clock() - self._oldest_capture() >= self._config.max_wait_ms / MS_PER_S

    def take_batch(self, flush: bool = False) -> list[Frame]:
        """Remove and return up to ``max_batch`` frames, oldest first, when a batch is due; else ``[]``.

        Call :meth:`take_expired` first: this method does not check deadlines.
        """
        if not self.is_due(flush):
            return []
        count = min(self._config.max_batch, len(self._frames))
        return [self._frames.popleft() for _ in range(count)]

    def time_until_due(self) -> float | None:
        """Seconds until the oldest waiting frame reaches ``max_wait_ms`` (0 when due now); None when empty."""
        if not self._frames:
            return None
        if len(self._frames) >= self._config.max_batch:
            return 0.0
        waited = self._clock() - self._oldest_capture()
        return max(0.0, self._config.max_wait_ms / MS_PER_S - waited)

    def drain(self) -> list[Frame]:
        """Remove and return every waiting frame (oldest first)."""
        frames = list(self._frames)
        self._frames.clear()
        return frames

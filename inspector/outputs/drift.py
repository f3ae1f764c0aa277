"""Score drift: per camera, rolling median and 99th percentile of PASS scores, and the median's ratio to the
median score of the gallery's calibration images (1 while the line looks like the gallery's world)."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from inspector.config.drift import DriftConfig
from inspector.core.records import Outcome
from inspector.ops.output_metrics import OutputMetrics

UPPER_PERCENTILE = 99.0


@dataclass(frozen=True)
class Reference:
    """What a camera's gallery says about normal parts: its image threshold and calibration median."""

    threshold: float | None
    median: float | None


@dataclass(frozen=True)
class DriftStats:
    """A camera's rolling PASS-score statistics (NaN until ``min_pass_scores`` are in the window)."""

    count: int
    median: float
    p99: float
    ratio: float


class DriftTracker:
    """A sink that keeps the latest PASS scores per camera; :meth:`update_gauges` exports the statistics.

    ``deliver`` appends one number under a lock (the pipeline's thread); the statistics are computed when
    the gauges are updated (once a second, from the daemon's supervision loop).
    """

    name = "drift"

    def __init__(
        self,
        config: DriftConfig,
        references: Mapping[str, Reference],
        metrics: OutputMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Track the cameras of ``references`` (camera -> its gallery's reference)."""
        self._config = config
        self._references = dict(references)
        self._metrics = metrics
        self._clock = clock
        self._lock = threading.Lock()
        self._scores: dict[str, deque[tuple[float, float]]] = {
            camera: deque(maxlen=config.window_pass_scores) for camera in references
        }
        if metrics is not None:
            for camera, ref in self._references.items():
                metrics.score_threshold.labels(camera=camera).set(_or_nan(ref.threshold))
                metrics.calibration_median.labels(camera=camera).set(_or_nan(ref.median))

    def deliver(self, outcome: Outcome) -> None:
        """Remember a PASS score (other verdicts and unknown cameras are ignored)."""
        window = self._scores.get(outcome.camera)
        if outcome.verdict != "PASS" or outcome.score is None or window is None:
            return
        with self._lock:
            window.append((self._clock(), outcome.score))

    def stats(self, camera: str) -> DriftStats:
        """The camera's statistics now (scores past ``max_age_s`` leave the window first)."""
        oldest = self._clock() - self._config.max_age_s
        with self._lock:
            window = self._scores[camera]
            while window and window[0][0] < oldest:
                window.popleft()
            scores = np.fromiter((s for _, s in window), np.float64, len(window))
        if scores.size < self._config.min_pass_scores:
            return DriftStats(int(scores.size), math.nan, math.nan, math.nan)
        median = float(np.median(scores))
        reference = self._references[camera].median
        ratio = median / reference if reference else math.nan
        return DriftStats(int(scores.size), median, float(np.percentile(scores, UPPER_PERCENTILE)), ratio)

    def update_gauges(self) -> None:
        """Export every camera's statistics."""
        if self._metrics is None:
            return
        for camera in self._scores:
            st = self.stats(camera)
            self._metrics.pass_median.labels(camera=camera).set(st.median)
            self._metrics.pass_p99.labels(camera=camera).set(st.p99)
            self._metrics.drift_ratio.labels(camera=camera).set(st.ratio)

    def close(self) -> None:
        """Nothing to flush."""


def _or_nan(value: float | None) -> float:
    return math.nan if value is None else value

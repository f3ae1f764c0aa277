"""Model worker: scores batches of frames against the gallery of each frame's product, one outcome per frame."""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import structlog

from inspector.core.names import Verdict
from inspector.core.records import Frame, Outcome
from inspector.daemon.products import ProductError, ProductRegistry, Scorer
from inspector.model.engine import ScoreResult
from inspector.model.geometry import SizeRange
from inspector.ops.logs import frame_logger

MS_PER_S = 1000.0
ERROR_REASON_MAX_CHARS = 300


@dataclass(frozen=True)
class BatchOutcome:
    """Every frame of a batch (same order) and the batch's time per stage in seconds."""

    outcomes: list[Outcome]
    stage_seconds: dict[str, float] = field(default_factory=dict)


class ModelWorker:
    """Scores frames with the scorer of their camera; never raises and never loses a frame.

    A batch whose scoring raises is retried frame by frame, so one bad frame cannot spoil the others;
    a frame that still fails gets an ERROR outcome whose ``error`` gives the reason. The worker knows
    nothing of the wire: it returns :class:`~inspector.core.records.Outcome` records.
    """

    def __init__(
        self,
        products: ProductRegistry,
        clock: Callable[[], float] = time.monotonic,
        before_score: Callable[[], None] | None = None,
    ) -> None:
        """Create a worker.

        Args:
            products: every product's scorer (see :func:`load_products`); each frame names its product.
            clock: monotonic clock comparable with ``Frame.monotonic_at``.
            before_score: called at the start of each :meth:`score` (fault injection: a stalled model call).
        """
        self._before_score = before_score
        self._products = products
        self._clock = clock
        self._lock = threading.Lock()
        self._busy_since: float | None = None
        self._sizes: dict[str, SizeRange | None] = {}  # gallery hash -> the frame sizes it accepts
        self._log = structlog.stdlib.get_logger(__name__)

    def busy_for_s(self) -> float:
        """Seconds the current :meth:`score` call has been running (0 when idle)."""
        with self._lock:
            started = self._busy_since
        return 0.0 if started is None else self._clock() - started

    def warm_up(self, batch_size: int) -> None:
        """Score a blank batch of ``batch_size`` crop-sized images with every distinct scorer (allocations,
        kernels)."""
        seen: set[int] = set()
        for scorer in (self._products.scorer(p) for p in self._products.products):
            if id(scorer) in seen:
                continue
            seen.add(id(scorer))
            side = scorer.config.crop_px
            scorer.score([np.zeros((side, side, 3), np.uint8) for _ in range(batch_size)])

    def score(self, frames: Sequence[Frame]) -> BatchOutcome:
        """Score a batch (cameras may use different galleries); one outcome per frame, in order."""
        with self._lock:
            self._busy_since = self._clock()
        try:
            if self._before_score is not None:
                self._before_score()
            results: dict[int, Outcome] = {
                i: self.fault(f) for i, f in enumerate(frames) if f.fault is not None
            }
            stage_ms: dict[str, float] = {}
            for scorer, indices in self._groups(frames, results).items():
                group = [frames[i] for i in indices]
                for i, outcome in zip(indices, self._score_group(scorer, group, stage_ms), strict=True):
                    results[i] = outcome
            return BatchOutcome(
                [results[i] for i in range(len(frames))],
                {stage: ms / MS_PER_S for stage, ms in stage_ms.items()},
            )
        finally:
            with self._lock:
                self._busy_since = None

    def _groups(self, frames: Sequence[Frame], done: dict[int, Outcome]) -> dict[Scorer, list[int]]:
        """Frames to score, by the scorer of their product now (an unknown product is an ERROR outcome)."""
        groups: dict[Scorer, list[int]] = {}
        for index, frame in enumerate(frames):
            if index in done:
                continue
            try:
                scorer = self._products.scorer(self._product_of(frame))
            except ProductError as exc:
                done[index] = self.failure(frame, "ERROR", str(exc))
                continue
            if problem := self._size_problem(scorer, frame):
                frame_logger(self._log, frame.camera, frame.seq).warning("frame_size_mismatch", error=problem)
                done[index] = self.failure(frame, "ERROR", problem)
                continue
            groups.setdefault(scorer, []).append(index)
        return groups

    def _size_problem(self, scorer: Scorer, frame: Frame) -> str | None:
        """Why the frame's size does not fit its gallery's images (a wrong camera or product), else None."""
        key = scorer.gallery.content_hash
        if key not in self._sizes:
            self._sizes[key] = SizeRange.of(scorer.gallery.manifest)
        sizes = self._sizes[key]
        return sizes.problem(frame.image.shape[1], frame.image.shape[0]) if sizes is not None else None

    def _product_of(self, frame: Frame) -> str:
        return frame.product if frame.product is not None else self._products.active(frame.camera)

    def _stamped(self, frame: Frame) -> Frame:
        """The frame with its product set (frames from the pipeline already carry it)."""
        return (
            frame
            if frame.product is not None
            else dataclasses.replace(frame, product=self._product_of(frame))
        )

    def fault(self, frame: Frame) -> Outcome:
        """The ERROR outcome of a frame that has a place in the sequence but nothing to score."""
        frame_logger(self._log, frame.camera, frame.seq).warning("frame_fault", fault=frame.fault)
        return self.failure(frame, "ERROR", frame.fault or "nothing to score")

    def _score_group(self, scorer: Scorer, group: list[Frame], stage_ms: dict[str, float]) -> list[Outcome]:
        started = self._clock()
        try:
            results = scorer.score([f.image for f in group])
        except Exception as exc:  # noqa: BLE001 - any scoring failure becomes ERROR verdicts, never a lost frame
            if len(group) > 1:
                self._log.warning("batch_scoring_failed_retrying_per_frame", size=len(group), error=repr(exc))
                return [o for f in group for o in self._score_group(scorer, [f], stage_ms)]
            frame = group[0]
            frame_logger(self._log, frame.camera, frame.seq).error("frame_scoring_failed", error=repr(exc))
            return [self.failure(frame, "ERROR", f"scoring failed: {type(exc).__name__}: {exc}", started)]
        for stage, ms in results[0].timings_ms.items() if results else ():
            stage_ms[stage] = stage_ms.get(stage, 0.0) + ms
        if len(results) != len(group):
            reason = f"scorer returned {len(results)} results for {len(group)} frames"
            return [self.failure(f, "ERROR", reason, started) for f in group]
        gallery = scorer.gallery.content_hash
        return [self._outcome(f, r, gallery, started) for f, r in zip(group, results, strict=True)]

    def _outcome(self, frame: Frame, result: ScoreResult, gallery: str, started: float) -> Outcome:
        """The frame's PASS/FAIL outcome, or ERROR when the result is not a number (it cannot be judged)."""
        if not (math.isfinite(result.score) and math.isfinite(result.threshold)):
            frame_logger(self._log, frame.camera, frame.seq).error(
                "frame_score_not_finite", score=result.score
            )
            return self.failure(frame, "ERROR", f"score {result.score} is not a finite number", started)
        return Outcome(
            frame=self._stamped(frame),
            verdict=result.verdict,
            score=result.score,
            threshold=result.threshold,
            review_threshold=result.review_threshold,
            defect_area_px=result.defect_area_px,
            gallery=gallery,
            anomaly_map=result.anomaly_map,
            mask=result.mask,
            pixel_threshold=result.pixel_threshold,
            crop=result.crop,
            latency_ms={"queue": (started - frame.monotonic_at) * MS_PER_S, **result.timings_ms},
            crop_box=result.crop_box,
            neighbours=result.neighbours,
        )

    def failure(self, frame: Frame, verdict: Verdict, reason: str, since: float | None = None) -> Outcome:
        """An ERROR or TIMEOUT outcome for a frame (no score) with its reason.

        Args:
            frame: the frame.
            verdict: "ERROR" or "TIMEOUT".
            reason: why, for the outcome's ``error`` (cut to ``ERROR_REASON_MAX_CHARS``).
            since: monotonic time the frame left the queue (default now), for the ``queue`` latency.
        """
        left_queue = self._clock() if since is None else since
        try:
            gallery: str | None = self._products.scorer(self._product_of(frame)).gallery.content_hash
        except ProductError:
            gallery = None
        return Outcome(
            frame=self._stamped(frame),
            verdict=verdict,
            gallery=gallery,
            latency_ms={"queue": (left_queue - frame.monotonic_at) * MS_PER_S},
            error=reason[:ERROR_REASON_MAX_CHARS],
        )

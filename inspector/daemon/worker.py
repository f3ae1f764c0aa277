"""Model worker: scores batches of camera frames against per-camera galleries, one domain outcome per frame."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import structlog

from inspector.config.model import ModelConfig
from inspector.config.root import InspectorConfig
from inspector.core.names import Verdict
from inspector.core.records import Frame, Outcome
from inspector.model.engine import BackboneCache, Inspector, ScoreResult, calibrated_score_median
from inspector.model.gallery import Gallery
from inspector.ops.logs import frame_logger

MS_PER_S = 1000.0
ERROR_REASON_MAX_CHARS = 300


class Scorer(Protocol):
    """What the worker needs from a scoring engine (``inspector.model.engine.Inspector`` satisfies it)."""

    gallery: Gallery
    config: ModelConfig

    def score(self, images: list[np.ndarray]) -> list[ScoreResult]:
        """Score a batch of uint8 images."""
        ...


@dataclass(frozen=True)
class BatchOutcome:
    """Every frame of a batch (same order) and the batch's time per stage in seconds."""

    outcomes: list[Outcome]
    stage_seconds: dict[str, float] = field(default_factory=dict)


def load_scorers(config: InspectorConfig, backbones: BackboneCache | None = None) -> dict[str, Scorer]:
    """Load and validate the gallery of every camera with :meth:`Inspector.from_gallery`.

    Each gallery file is read once (cameras sharing a file share its scorer), and galleries whose backbone is
    the same network share one copy of it.

    Returns:
        Camera name -> scorer.

    Raises:
        GalleryError: a gallery is missing, corrupt, or does not match the backbone.
        BackboneError: the backbone weights are unavailable.
        EngineError: a gallery is not calibrated, or the configured device is unusable.
        ValueError: a camera has no gallery (see ``inspector.config.load.run_problems``).
    """
    backbones = backbones if backbones is not None else BackboneCache()
    by_path: dict[Path, Scorer] = {}
    scorers: dict[str, Scorer] = {}
    for cam in config.cameras:
        path = config.gallery_for(cam)
        if path is None:
            raise ValueError(f"camera {cam.name}: no gallery (set worker.gallery or cameras.gallery)")
        key = path.resolve()
        if key not in by_path:
            by_path[key] = Inspector.from_gallery(path, config.runtime, backbones=backbones)
        scorers[cam.name] = by_path[key]
    return scorers


class ModelWorker:
    """Scores frames with the scorer of their camera; never raises and never loses a frame.

    A batch whose scoring raises is retried frame by frame, so one bad frame cannot spoil the others;
    a frame that still fails gets an ERROR outcome whose ``error`` gives the reason. The worker knows
    nothing of the wire: it returns :class:`~inspector.core.records.Outcome` records.
    """

    def __init__(self, scorers: Mapping[str, Scorer], clock: Callable[[], float] = time.monotonic) -> None:
        """Create a worker.

        Args:
            scorers: camera name -> scorer (see :func:`load_scorers`).
            clock: monotonic clock comparable with ``Frame.monotonic_at``.
        """
        self._scorers = dict(scorers)
        self._clock = clock
        self._lock = threading.Lock()
        self._busy_since: float | None = None
        self._log = structlog.stdlib.get_logger(__name__)

    @property
    def cameras(self) -> list[str]:
        """Camera names this worker can score."""
        return list(self._scorers)

    def gallery_of(self, camera: str) -> tuple[str, str]:
        """(content hash, backbone) of a camera's gallery."""
        manifest = self._scorers[camera].gallery.manifest
        return manifest.content_sha256, manifest.backbone

    def calibration_of(self, camera: str) -> tuple[float | None, float | None]:
        """(image threshold, median image score of the normal images) of a camera's gallery, when known."""
        scorer = self._scorers[camera]
        cal = scorer.gallery.manifest.calibration
        threshold = cal.image_threshold if cal is not None else None
        return threshold, calibrated_score_median(cal, scorer.config.image_score)

    def busy_for_s(self) -> float:
        """Seconds the current :meth:`score` call has been running (0 when idle)."""
        with self._lock:
            started = self._busy_since
        return 0.0 if started is None else self._clock() - started

    def warm_up(self, batch_size: int) -> None:
        """Score a blank batch of ``batch_size`` images with every distinct scorer (allocations, kernels)."""
        seen: set[int] = set()
        for scorer in self._scorers.values():
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
            results: dict[int, Outcome] = {}
            stage_ms: dict[str, float] = {}
            for scorer, indices in self._groups(frames).items():
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

    def _groups(self, frames: Sequence[Frame]) -> dict[Scorer, list[int]]:
        groups: dict[Scorer, list[int]] = {}
        for index, frame in enumerate(frames):
            groups.setdefault(self._scorers[frame.camera], []).append(index)
        return groups

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
            frame=frame,
            verdict=result.verdict,
            score=result.score,
            threshold=result.threshold,
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
        scorer = self._scorers.get(frame.camera)
        return Outcome(
            frame=frame,
            verdict=verdict,
            gallery=scorer.gallery.content_hash if scorer is not None else None,
            latency_ms={"queue": (left_queue - frame.monotonic_at) * MS_PER_S},
            error=reason[:ERROR_REASON_MAX_CHARS],
        )

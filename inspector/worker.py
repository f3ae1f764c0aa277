"""Model worker: scores batches of camera frames against per-camera galleries and builds their verdict messages."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import structlog

from inspector.capture import Frame
from inspector.config import InspectorConfig, ModelConfig
from inspector.engine import (
    FeatureEngine,
    Inspector,
    ScoreResult,
    config_from_manifest,
    manifest_preprocessing,
)
from inspector.gallery import Gallery, load_gallery
from inspector.logs import frame_logger
from inspector.publisher import MASK_KIND_BY_MODE, MaskMode
from inspector.scoring import map_to_u8
from inspector.wire import MaskInfo, Verdict, VerdictHeader, encode_mask, rfc3339

MS_PER_S = 1000.0
PLACEHOLDER_BOOT_ID = "0" * 32  # replaced by the publisher when the message is sent
ERROR_REASON_MAX_CHARS = 300


class Scorer(Protocol):
    """What the worker needs from a scoring engine (``inspector.engine.Inspector`` satisfies it)."""

    gallery: Gallery
    config: ModelConfig

    def score(self, images: list[np.ndarray]) -> list[ScoreResult]:
        """Score a batch of uint8 images."""
        ...


@dataclass(frozen=True)
class FrameOutcome:
    """One frame's verdict message, ready to publish (``end_to_end`` latency is added at publish time)."""

    frame: Frame
    header: VerdictHeader
    mask: bytes


@dataclass(frozen=True)
class BatchOutcome:
    """Every frame of a batch (same order) and the batch's time per stage in seconds."""

    outcomes: list[FrameOutcome]
    stage_seconds: dict[str, float] = field(default_factory=dict)


def load_scorers(config: InspectorConfig) -> dict[str, Scorer]:
    """Load and validate the gallery of every camera, sharing one backbone among identical model settings.

    Returns:
        Camera name -> scorer (cameras that use the same gallery file share one scorer).

    Raises:
        GalleryError: a gallery is missing, corrupt, or does not match the backbone.
        BackboneError: the backbone weights are unavailable.
        EngineError: a gallery is not calibrated, or the configured device is unusable.
        ValueError: a camera has no gallery (see ``inspector.config.run_problems``).
    """
    engines: dict[str, FeatureEngine] = {}
    by_path: dict[Path, Scorer] = {}
    scorers: dict[str, Scorer] = {}
    for cam in config.cameras:
        path = config.gallery_for(cam)
        if path is None:
            raise ValueError(f"camera {cam.name}: no gallery (set worker.gallery or cameras.gallery)")
        key = path.resolve()
        if key not in by_path:
            by_path[key] = _load_inspector(path, config.model, engines)
        scorers[cam.name] = by_path[key]
    return scorers


def _load_inspector(path: Path, runtime: ModelConfig, engines: dict[str, FeatureEngine]) -> Inspector:
    """Inspector.from_gallery, reusing an already built engine when the model settings are identical."""
    header = load_gallery(path)
    model_cfg = config_from_manifest(header.manifest, runtime)
    key = model_cfg.model_dump_json()
    if key not in engines:
        engines[key] = FeatureEngine(model_cfg)
    engine = engines[key]
    gallery = load_gallery(
        path,
        expect_backbone=engine.spec.name,
        expect_weights_sha256=engine.spec.weights_sha256,
        expect_preprocessing=manifest_preprocessing(model_cfg, engine.spec),
    )
    return Inspector(engine, gallery)


class ModelWorker:
    """Scores frames with the scorer of their camera; never raises and never loses a frame.

    A batch whose scoring raises is retried frame by frame, so one bad frame cannot spoil the others;
    a frame that still fails gets an ERROR verdict whose ``error`` gives the reason.
    """

    def __init__(
        self,
        scorers: Mapping[str, Scorer],
        mask_mode: MaskMode,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Create a worker.

        Args:
            scorers: camera name -> scorer (see :func:`load_scorers`).
            mask_mode: what the message's mask part carries (``bus.mask``).
            clock: monotonic clock comparable with ``Frame.monotonic_at``.
        """
        self._scorers = dict(scorers)
        self._mask_kind = MASK_KIND_BY_MODE[mask_mode]
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
            results: dict[int, FrameOutcome] = {}
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

    def _score_group(
        self, scorer: Scorer, group: list[Frame], stage_ms: dict[str, float]
    ) -> list[FrameOutcome]:
        started = self._clock()
        try:
            results = scorer.score([f.image for f in group])
        except Exception as exc:  # noqa: BLE001 - any scoring failure becomes ERROR verdicts, never a lost frame
            if len(group) > 1:
                self._log.warning("batch_scoring_failed_retrying_per_frame", size=len(group), error=repr(exc))
                return [o for f in group for o in self._score_group(scorer, [f], stage_ms)]
            frame = group[0]
            frame_logger(self._log, frame.camera, frame.seq).error("frame_scoring_failed", error=repr(exc))
            reason = f"scoring failed: {type(exc).__name__}: {exc}"[:ERROR_REASON_MAX_CHARS]
            return [self.failure(frame, "ERROR", reason, started)]
        for stage, ms in results[0].timings_ms.items() if results else ():
            stage_ms[stage] = stage_ms.get(stage, 0.0) + ms
        if len(results) != len(group):
            reason = f"scorer returned {len(results)} results for {len(group)} frames"
            return [self.failure(f, "ERROR", reason, started) for f in group]
        return [self._safe_outcome(scorer, f, r, started) for f, r in zip(group, results, strict=True)]

    def _safe_outcome(
        self, scorer: Scorer, frame: Frame, result: ScoreResult, started: float
    ) -> FrameOutcome:
        """:meth:`_outcome`, or an ERROR outcome when the result cannot be encoded (e.g. a NaN score)."""
        try:
            return self._outcome(scorer, frame, result, started)
        except ValueError as exc:  # pydantic ValidationError and mask encoding errors are ValueErrors
            frame_logger(self._log, frame.camera, frame.seq).error("verdict_encoding_failed", error=repr(exc))
            reason = f"result not publishable: {exc}"[:ERROR_REASON_MAX_CHARS]
            return self.failure(frame, "ERROR", reason, started)

    def _outcome(self, scorer: Scorer, frame: Frame, result: ScoreResult, started: float) -> FrameOutcome:
        cal = scorer.gallery.manifest.calibration
        encode_start = self._clock()
        if self._mask_kind is None:
            mask, info = encode_mask(None)
        elif self._mask_kind == "binary":
            mask, info = encode_mask(result.mask, "binary")
        else:
            pixel_threshold = cal.pixel_threshold if cal is not None else 1.0
            mask, info = encode_mask(map_to_u8(result.anomaly_map, pixel_threshold), "anomaly_map_u8")
        latency = {"queue": (started - frame.monotonic_at) * MS_PER_S, **result.timings_ms}
        latency["encode"] = (self._clock() - encode_start) * MS_PER_S
        verdict: Verdict = "FAIL" if result.verdict == "FAIL" else "PASS"
        header = _header(
            frame,
            verdict,
            scorer.gallery.content_hash,
            latency,
            info,
            score=(result.score, result.threshold, result.defect_area_px),
        )
        return FrameOutcome(frame, header, mask)

    def failure(
        self, frame: Frame, verdict: Verdict, reason: str, since: float | None = None
    ) -> FrameOutcome:
        """An ERROR or TIMEOUT outcome for a frame (no score, empty mask part) with its reason.

        Args:
            frame: the frame.
            verdict: "ERROR" or "TIMEOUT".
            reason: why, for the header's ``error`` field.
            since: monotonic time the frame left the queue (default now), for the ``queue`` latency.
        """
        left_queue = self._clock() if since is None else since
        scorer = self._scorers.get(frame.camera)
        gallery = scorer.gallery.content_hash if scorer is not None else None
        latency = {"queue": (left_queue - frame.monotonic_at) * MS_PER_S}
        kind = self._mask_kind or "anomaly_map_u8"
        info = MaskInfo(encoding="none", kind=kind, width=0, height=0)
        return FrameOutcome(frame, _header(frame, verdict, gallery, latency, info, error=reason), b"")


def _header(
    frame: Frame,
    verdict: Verdict,
    gallery: str | None,
    latency_ms: dict[str, float],
    mask: MaskInfo,
    score: tuple[float, float, int] | None = None,
    error: str | None = None,
) -> VerdictHeader:
    """A verdict header; boot id and publish time are placeholders the publisher restamps."""
    value, threshold, area = score if score is not None else (None, None, None)
    return VerdictHeader(
        boot_id=PLACEHOLDER_BOOT_ID,
        camera=frame.camera,
        seq=frame.seq,
        part_id=frame.part_id,
        captured_at=rfc3339(frame.captured_at),
        published_at=rfc3339(frame.captured_at),
        verdict=verdict,
        score=value,
        threshold=threshold,
        defect_area_px=area,
        gallery=gallery,
        latency_ms={stage: max(0.0, ms) for stage, ms in latency_ms.items()},
        mask=mask,
        error=error,
    )

"""Calibrating a gallery's thresholds from normal images: scoring them, refusing overlap and degenerate results."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from inspector.config.calibration import CalibrationConfig
from inspector.config.runtime import RuntimeConfig
from inspector.core.errors import InspectorError
from inspector.model import calibration as calib
from inspector.model.digest import file_sha256
from inspector.model.engine import BackboneCache, Features, Inspector, RawScores, iter_batches
from inspector.model.gallery import Gallery, is_legacy, migrate_legacy, staged_replace, update_calibration
from inspector.model.manifest import Calibration, median
from inspector.model.preprocess import read_image

MIN_CALIBRATION_IMAGES = 2
SCALE_SAMPLE_IMAGES = 32  # normal images used to estimate the per-stage distance scales
# A normal image whose pooled feature lies closer to a gallery image than this fraction of the gallery's own
# median nearest-neighbour spacing is the same picture (re-encoded, resized or renamed), not a new part.
NEAR_DUPLICATE_FRACTION = 0.02
SPACING_BLOCK_ROWS = 1024  # gallery rows per block when measuring that spacing (bounded memory)
LISTED_NAMES = 10  # file names an error lists before "and N more"
HELD_OUT_METHODS = (
    "holdout",
    "labelled",
)  # calibrations on images outside the gallery (redone only with them)

Progress = Callable[[int], None]


class CalibrationError(InspectorError):
    """A calibration refused before anything is written (the message names the files and the reason)."""


def utc_now() -> str:
    """Current time as RFC 3339 UTC."""
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def calibration_steps(n_normal: int, stage_fusion: str) -> int:
    """Images a calibration's progress counts: the stage-scale sample (scaled fusions only), then every one."""
    return n_normal + (min(SCALE_SAMPLE_IMAGES, n_normal) if stage_fusion != "mean" else 0)


@dataclass(frozen=True)
class Overlap:
    """A normal image that is (nearly) a gallery image: its distances would be zero, not a normal part's."""

    image: Path
    source: str  # the gallery source it repeats
    how: str

    def line(self) -> str:
        """``image = source (how)``."""
        return f"{self.image} = gallery image {self.source} ({self.how})"


def _listed(lines: list[str]) -> str:
    shown = "; ".join(lines[:LISTED_NAMES])
    return shown + (f"; and {len(lines) - LISTED_NAMES} more" if len(lines) > LISTED_NAMES else "")


def overlap_error(gallery: Path, overlaps: Sequence[Overlap]) -> CalibrationError:
    """The refusal of a calibration on gallery images, naming them."""
    return CalibrationError(
        f"{gallery}: {len(overlaps)} normal image(s) are already in the gallery, so their distances would be "
        f"about 0 and the thresholds meaningless: {_listed([o.line() for o in overlaps])}. Calibrate on parts "
        "the gallery has not seen (or leave --normal-dir out for leave-one-out); --allow-overlap overrides"
    )


def hash_overlaps(gallery: Gallery, images: Sequence[Path]) -> list[Overlap]:
    """Normal images whose SHA-256 is one of the gallery's sources."""
    known = {s.sha256: s.name for s in gallery.manifest.sources}
    found = []
    for image in images:
        source = known.get(file_sha256(image))
        if source is not None:
            found.append(Overlap(image, source, "same SHA-256"))
    return found


def gallery_spacing(pooled: torch.Tensor) -> float:
    """Median distance from each gallery image's pooled feature to its nearest other one (blocked)."""
    if pooled.shape[0] < 2:
        return 0.0
    nearest = []
    for start in range(0, pooled.shape[0], SPACING_BLOCK_ROWS):
        block = torch.cdist(pooled[start : start + SPACING_BLOCK_ROWS].double(), pooled.double())
        idx = torch.arange(block.shape[0])
        block[idx, idx + start] = float("inf")
        nearest.append(block.min(1).values)
    return float(torch.cat(nearest).median())


@dataclass
class _NearDuplicates:
    """Holdout images found within the near-duplicate distance of a gallery image while they were scored."""

    cutoff: float
    found: dict[int, tuple[int, float]] = field(default_factory=dict)  # image index -> (gallery index, dist)

    def check(self, offset: int, pooled: torch.Tensor, gallery_pooled: torch.Tensor) -> None:
        dist, index = torch.cdist(pooled.double(), gallery_pooled.double()).min(1)
        for i in torch.nonzero(dist <= self.cutoff).flatten().tolist():
            self.found[offset + i] = (int(index[i]), float(dist[i]))


def _leave_out(
    inspector: Inspector,
    rows: np.ndarray,
    scales: list[float] | None,
    progress: Progress | None,
    limit: int | None = None,
) -> RawScores:
    """Score each gallery image (the first ``limit``, or all) without the gallery images in its row of ``rows``."""
    g: Gallery = inspector.gallery
    n = min(rows.shape[0], limit or rows.shape[0])
    dev = inspector.engine.device
    size = inspector.config.crop_px
    parts: list[RawScores] = []
    batch = inspector.engine.runtime.batch_size
    for start in range(0, n, batch):
        sel = torch.arange(start, min(n, start + batch))
        feats = Features(g.pooled[sel].to(dev), {s: t[sel].to(dev) for s, t in g.stages.items()})
        left_out = torch.from_numpy(rows[start : start + len(sel)]).to(dev)
        parts.append(inspector.raw_scores(feats, [(0, size, 0, size)] * len(sel), left_out, scales))
        if progress:
            progress(len(sel))
    return _concat(parts)


def _holdout(
    inspector: Inspector,
    paths: Sequence[Path],
    scales: list[float] | None,
    progress: Progress | None,
    near: _NearDuplicates | None,
    limit: int | None = None,
) -> RawScores:
    """Score normal images (the first ``limit``, or all) against the whole gallery."""
    parts: list[RawScores] = []
    done = 0
    for batch in iter_batches(list(paths)[:limit], inspector.engine.runtime.batch_size):
        feats, prepared = inspector.engine.extract([read_image(p) for p in batch], {})
        if near is not None:
            near.check(done, feats.pooled, inspector.pooled)
        parts.append(inspector.raw_scores(feats, prepared.valid, None, scales))
        done += len(batch)
        if progress:
            progress(len(batch))
    return _concat(parts)


@dataclass(frozen=True)
class NormalScores:
    """Scores of normal images, the stage scales they were fused with, and how they were obtained."""

    raw: RawScores
    scales: list[float] | None
    method: str  # leave_one_out, leave_m_out, k_fold, holdout or labelled
    overlaps: tuple[Overlap, ...] = ()  # holdout images that are near-duplicates of gallery images


def score_normals(
    inspector: Inspector,
    calibration: CalibrationConfig,
    normal_images: Sequence[Path] | None = None,
    progress: Progress | None = None,
) -> NormalScores:
    """Score normal images: ``normal_images`` against the whole gallery, else each gallery image without the
    images ``calibration.leave_out`` says. Scaled fusions first estimate the stage scales on a sample (that
    pass counts in ``progress`` too: see :func:`calibration_steps`). Holdout images found within the
    near-duplicate distance of a gallery image are reported in ``overlaps``."""
    rows: np.ndarray | None = None
    near: _NearDuplicates | None = None
    if normal_images:
        spacing = gallery_spacing(inspector.pooled.cpu())
        near = _NearDuplicates(NEAR_DUPLICATE_FRACTION * spacing)
    else:
        pooled = inspector.gallery.pooled.float().numpy()
        rows = calib.left_out_rows(
            pooled, calibration.leave_out, calibration.neighbours_left_out, calibration.folds
        )

    def run(scales: list[float] | None, limit: int | None) -> RawScores:
        if normal_images:
            return _holdout(inspector, normal_images, scales, progress, near, limit)
        assert rows is not None
        return _leave_out(inspector, rows, scales, progress, limit)

    scales: list[float] | None = None
    if inspector.config.stage_fusion != "mean":
        sample = run([1.0] * len(inspector.config.stages), SCALE_SAMPLE_IMAGES)
        scales = [float(v) for v in sample.stage_means.mean(0)]
    raw = run(scales, None)
    names = [s.name for s in inspector.gallery.manifest.sources]
    overlaps = tuple(
        Overlap(Path(normal_images[i]), names[g], f"pooled-feature distance {d:.3g}")
        for i, (g, d) in sorted(near.found.items())
    ) if normal_images and near is not None else ()  # fmt: skip
    return NormalScores(raw, scales, "holdout" if normal_images else calibration.leave_out, overlaps)


def _concat(parts: list[RawScores]) -> RawScores:
    return RawScores(
        np.concatenate([p.knn for p in parts]),
        np.concatenate([p.map_max for p in parts]),
        np.concatenate([p.map_top_mean for p in parts]),
        np.concatenate([p.maps for p in parts]),
        np.concatenate([p.stage_means for p in parts]),
    )


def thresholds_from_scores(
    inspector: Inspector, normal: NormalScores, calibration: CalibrationConfig
) -> Calibration:
    """The calibration record of normal scores: both thresholds by the chosen tail estimate, and what the
    images support (failures among them, the 95% upper bound on the false-reject rate, images needed)."""
    raw, cfg = normal.raw, calibration
    knn = [float(v) for v in raw.knn]
    map_maxima = [float(v) for v in raw.map_max]
    pixel = calib.threshold_for(np.array(map_maxima), cfg.pixel_target_rate, cfg.tail, cfg.tail_fraction)
    provisional = Calibration(
        image_threshold=0.0,
        target_false_reject_rate=cfg.target_false_reject_rate,
        pixel_threshold=pixel,
        pixel_target_rate=cfg.pixel_target_rate,
        method=normal.method,
        n_images=len(knn),
        score_median=median(knn) or 1.0,
        map_max_median=median(map_maxima) or 1.0,
        stage_scales=normal.scales,
        normal_scores=map_maxima,  # replaced below, once the scores are combined with these medians
        normal_knn=knn,
        normal_map_max=map_maxima,
        created_at=utc_now(),
        neighbours_left_out=cfg.neighbours_left_out if normal.method == "leave_m_out" else None,
        folds=cfg.folds if normal.method == "k_fold" else None,
        tail=cfg.tail,
        tail_fraction=cfg.tail_fraction if cfg.tail == "pareto" else None,
    )
    # float64 from the recorded values, so that a loader recomputes the very same thresholds
    scores = [float(v) for v in np.ravel(inspector.combine(raw, provisional))]
    values = np.array(scores)
    rate = cfg.target_false_reject_rate
    image = calib.threshold_for(values, rate, cfg.tail, cfg.tail_fraction)
    above = int(np.count_nonzero(values > image))
    review: dict[str, float] = {}
    if cfg.target_review_rate is not None:
        total = rate + cfg.target_review_rate
        review = {"target_review_rate": cfg.target_review_rate,
                  "review_threshold": calib.threshold_for(values, total, cfg.tail, cfg.tail_fraction)}  # fmt: skip
    return provisional.model_copy(
        update={
            **review,
            "image_threshold": image,
            "image_score_median": median(scores),
            "normal_scores": scores,
            "empirical_threshold": calib.threshold_at_rate(values, rate),
            "normal_above_threshold": above,
            "false_reject_upper_bound": calib.upper_bound(above, values.size),
            "images_needed": calib.images_needed(rate),
        }
    )


def calibration_warning(cal: Calibration) -> str | None:
    """A warning when the calibration images are too few to verify the target false-reject rate."""
    needed = cal.images_needed or calib.images_needed(cal.target_false_reject_rate)
    if cal.n_images >= needed:
        return None
    bound = cal.false_reject_upper_bound
    supports = f"; at 95% confidence they bound it only at {bound:.1%}" if bound is not None else ""
    which = {"holdout": "hold-out folder", "labelled": "labelled set"}.get(cal.method, "gallery")
    return (
        f"{which} too small for the target: {cal.n_images} normal images cannot verify a "
        f"{cal.target_false_reject_rate:.2%} false-reject rate (a zero-failure check needs {needed}){supports}"
    )


def calibrate_gallery(
    path: Path,
    runtime: RuntimeConfig,
    calibration: CalibrationConfig,
    normal_images: Sequence[Path] | None = None,
    progress: Progress | None = None,
    backbones: BackboneCache | None = None,
    allow_overlap: bool = False,
    method: str = "holdout",
) -> Calibration:
    """Set the image and pixel thresholds from normal images and store them in the gallery manifest.

    Without ``normal_images`` each gallery image is scored against the gallery without itself and the images
    ``calibration.leave_out`` names; with them, those images are scored against the whole gallery, and any of
    them that is a gallery image (same SHA-256, or a near-duplicate pooled feature) refuses the calibration
    unless ``allow_overlap`` (``method`` then names where they came from: ``holdout`` or ``labelled``). A
    degenerate result (a zero stage scale, a threshold at or below the smallest
    normal score) is refused. Nothing is written unless the whole calibration succeeds: the file is either
    the old gallery, byte for byte, or the calibrated one (a format-version-1 gallery is migrated too).

    Returns:
        The calibration written to the manifest, with the normal scores it was computed from.

    Raises:
        CalibrationError: too few normal images, overlap with the gallery, or a degenerate result.
    """
    if normal_images is not None and len(normal_images) < MIN_CALIBRATION_IMAGES:
        raise CalibrationError(
            f"{path}: need at least {MIN_CALIBRATION_IMAGES} normal images, got {len(normal_images)}"
        )
    legacy = is_legacy(path)  # read from the file itself first, so that its errors name it
    with staged_replace(path, "calibrating", copy_existing=True) as staging:
        if legacy:
            migrate_legacy(staging)
        source = staging if legacy else path
        inspector = Inspector.from_gallery(source, runtime, require_calibration=False, backbones=backbones)
        if normal_images and not allow_overlap and (found := hash_overlaps(inspector.gallery, normal_images)):
            raise overlap_error(path, found)
        normal = score_normals(inspector, calibration, normal_images, progress)
        if normal_images:
            normal = dataclasses.replace(normal, method=method)
        if normal.overlaps and not allow_overlap:
            raise overlap_error(path, normal.overlaps)
        final = thresholds_from_scores(inspector, normal, calibration)
        if problems := final.degeneracies():
            raise CalibrationError(f"{path}: calibration refused, nothing written: " + "; ".join(problems))
        update_calibration(staging, final)
    return final

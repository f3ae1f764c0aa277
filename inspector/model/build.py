"""Building a gallery from known-good images and calibrating its thresholds from normal images only."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from inspector.config.calibration import CalibrationConfig
from inspector.config.model import ModelConfig
from inspector.config.runtime import RuntimeConfig
from inspector.core.errors import InspectorError
from inspector.core.names import IMAGE_SUFFIXES
from inspector.model import calibration as calib
from inspector.model.digest import file_sha256
from inspector.model.engine import BackboneCache, FeatureEngine, Features, Inspector, RawScores, iter_batches
from inspector.model.gallery import Gallery, load_gallery, migrate_legacy, save_gallery, update_calibration
from inspector.model.manifest import GALLERY_FORMAT_VERSION, Calibration, GalleryManifest, SourceImage, median
from inspector.model.preprocess import read_image
from inspector.model.settings import manifest_preprocessing, spade_params

MIN_CALIBRATION_IMAGES = 2
SCALE_SAMPLE_IMAGES = 32  # normal images used to estimate the per-stage distance scales

Progress = Callable[[int], None]


class BuildError(InspectorError):
    """A gallery cannot be built from the given images (the message names the folder or file)."""


def list_images(folder: Path) -> list[Path]:
    """Image files directly in a folder, sorted by name.

    Raises:
        BuildError: the folder is missing or holds no image.
    """
    if not folder.is_dir():
        raise BuildError(f"{folder}: not a folder")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise BuildError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return paths


def utc_now() -> str:
    """Current time as RFC 3339 UTC."""
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def extract_all(engine: FeatureEngine, paths: Sequence[Path], progress: Progress | None = None) -> Features:
    """Features of every image (on CPU), read and batched by the engine's batch size."""
    pooled: list[torch.Tensor] = []
    stages: dict[int, list[torch.Tensor]] = {s: [] for s in engine.config.stages}
    for batch in iter_batches(list(paths), engine.runtime.batch_size):
        feats, _ = engine.extract([read_image(p) for p in batch], {})
        pooled.append(feats.pooled.cpu())
        for s, t in feats.stages.items():
            stages[s].append(t.cpu())
        if progress:
            progress(len(batch))
    return Features(torch.cat(pooled), {s: torch.cat(v) for s, v in stages.items()})


def build_gallery(
    images: Sequence[Path],
    out: Path,
    config: ModelConfig,
    runtime: RuntimeConfig,
    float16: bool = False,
    progress: Progress | None = None,
    backbones: BackboneCache | None = None,
) -> GalleryManifest:
    """Extract features of known-good images and write an (uncalibrated) gallery file.

    Args:
        images: the known-good image files.
        out: gallery file to write (atomically).
        config: the model settings the gallery records.
        runtime: device, arithmetic and weights files.
        float16: store features as float16.
        progress: called with the number of images done after each batch.
        backbones: shared backbones (to reuse one already built).

    Raises:
        BuildError: fewer than two images.
        ImageReadError: an image cannot be read (the message names it).
    """
    if len(images) < MIN_CALIBRATION_IMAGES:
        raise BuildError(f"need at least {MIN_CALIBRATION_IMAGES} good images, got {len(images)}")
    engine = FeatureEngine(config, runtime, backbones)
    feats = extract_all(engine, images, progress)
    manifest = GalleryManifest(
        format_version=GALLERY_FORMAT_VERSION,
        backbone=engine.spec.name,
        weights_sha256=engine.spec.weights_sha256,
        preprocessing=manifest_preprocessing(config, engine.spec),
        stages=list(config.stages),
        stage_shapes={},
        spade=spade_params(config),
        image_count=len(images),
        sources=[SourceImage(name=p.name, sha256=file_sha256(p)) for p in images],
        created_at=utc_now(),
        storage_dtype="float16" if float16 else "float32",
        content_sha256="",
        calibration=None,
    )
    return save_gallery(out, feats.pooled, feats.stages, manifest, float16=float16)


threshold_at_rate = calib.threshold_at_rate  # its home is model.calibration; kept importable from here


def calibration_steps(n_normal: int, stage_fusion: str) -> int:
    """Images a calibration's progress counts: the stage-scale sample (scaled fusions only), then every one."""
    return n_normal + (min(SCALE_SAMPLE_IMAGES, n_normal) if stage_fusion != "mean" else 0)


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
    limit: int | None = None,
) -> RawScores:
    """Score normal images (the first ``limit``, or all) against the whole gallery."""
    parts: list[RawScores] = []
    for batch in iter_batches(list(paths)[:limit], inspector.engine.runtime.batch_size):
        feats, prepared = inspector.engine.extract([read_image(p) for p in batch], {})
        parts.append(inspector.raw_scores(feats, prepared.valid, None, scales))
        if progress:
            progress(len(batch))
    return _concat(parts)


@dataclass(frozen=True)
class NormalScores:
    """Scores of normal images, the stage scales they were fused with, and how they were obtained."""

    raw: RawScores
    scales: list[float] | None
    method: str  # leave_one_out, leave_m_out, k_fold or holdout


def score_normals(
    inspector: Inspector,
    calibration: CalibrationConfig,
    normal_images: Sequence[Path] | None = None,
    progress: Progress | None = None,
) -> NormalScores:
    """Score normal images: ``normal_images`` against the whole gallery, else each gallery image without the
    images ``calibration.leave_out`` says. Scaled fusions first estimate the stage scales on a sample (that
    pass counts in ``progress`` too: see :func:`calibration_steps`)."""
    rows: np.ndarray | None = None
    if not normal_images:
        pooled = inspector.gallery.pooled.float().numpy()
        rows = calib.left_out_rows(
            pooled, calibration.leave_out, calibration.neighbours_left_out, calibration.folds
        )

    def run(scales: list[float] | None, limit: int | None) -> RawScores:
        if normal_images:
            return _holdout(inspector, normal_images, scales, progress, limit)
        assert rows is not None
        return _leave_out(inspector, rows, scales, progress, limit)

    scales: list[float] | None = None
    if inspector.config.stage_fusion != "mean":
        sample = run([1.0] * len(inspector.config.stages), SCALE_SAMPLE_IMAGES)
        scales = [float(v) for v in sample.stage_means.mean(0)]
    return NormalScores(run(scales, None), scales, "holdout" if normal_images else calibration.leave_out)


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
    return provisional.model_copy(
        update={
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
    return (
        f"gallery too small for the target: {cal.n_images} normal images cannot verify a "
        f"{cal.target_false_reject_rate:.2%} false-reject rate (a zero-failure check needs {needed}){supports}"
    )


def calibrate_gallery(
    path: Path,
    runtime: RuntimeConfig,
    calibration: CalibrationConfig,
    normal_images: Sequence[Path] | None = None,
    progress: Progress | None = None,
    backbones: BackboneCache | None = None,
) -> Calibration:
    """Set the image and pixel thresholds from normal images and store them in the gallery manifest.

    Without ``normal_images`` each gallery image is scored against the gallery without itself and the images
    ``calibration.leave_out`` names; with them, those images are scored against the whole gallery.

    A format-version-1 gallery is first rewritten as the current version (see :func:`migrate_legacy`).

    Returns:
        The calibration written to the manifest, with the normal scores it was computed from.
    """
    migrate_legacy(path)
    inspector = Inspector.from_gallery(path, runtime, require_calibration=False, backbones=backbones)
    final = thresholds_from_scores(
        inspector, score_normals(inspector, calibration, normal_images, progress), calibration
    )
    update_calibration(path, final)
    load_gallery(path)  # prove the rewritten file validates before anyone relies on it
    return final


@dataclass(frozen=True)
class GrowResult:
    """What ``add_to_gallery`` did: the manifest written, the images added, and the duplicates refused."""

    manifest: GalleryManifest
    added: list[Path]
    duplicates: list[tuple[Path, str]]  # (file, the source it duplicates)


def add_to_gallery(
    path: Path,
    images: Sequence[Path],
    runtime: RuntimeConfig,
    calibration: CalibrationConfig | None = None,
    progress: Progress | None = None,
    backbones: BackboneCache | None = None,
) -> GrowResult:
    """Append known-good images to a gallery (SPADE needs no training: more rows), then re-calibrate it.

    Images whose SHA-256 is already in the gallery (or repeated among ``images``) are refused. Features are
    extracted with the gallery's own recorded settings. The grown, re-calibrated gallery is written beside the
    file and then renamed over it, so the file is at every moment either the old gallery or the new one.

    Args:
        path: the gallery file.
        images: new known-good images.
        runtime: device, arithmetic and weights files.
        calibration: target rates; default: the ones the gallery was calibrated at (1% when it never was).
        progress: called with the number of images done (features, then calibration).
        backbones: shared backbones.

    Raises:
        BuildError: no new image (all duplicates).
        GalleryError: the gallery does not load.
        ImageReadError: an image cannot be read (the message names it).
    """
    inspector = Inspector.from_gallery(path, runtime, require_calibration=False, backbones=backbones)
    old = inspector.gallery
    known = {s.sha256: s.name for s in old.manifest.sources}
    added: dict[Path, str] = {}  # new image -> its SHA-256
    duplicates: list[tuple[Path, str]] = []
    for image in images:
        digest = file_sha256(image)
        if digest in known:
            duplicates.append((image, known[digest]))
        else:
            known[digest] = image.name
            added[image] = digest
    if not added:
        raise BuildError(f"{path}: no new image to add ({len(duplicates)} already in the gallery)")
    new = extract_all(inspector.engine, list(added), progress)
    stages = {s: torch.cat([old.stages[s], new.stages[s]]) for s in old.stages}
    sources = [*old.manifest.sources, *(SourceImage(name=p.name, sha256=d) for p, d in added.items())]
    manifest = old.manifest.model_copy(
        update={"image_count": len(sources), "sources": sources, "calibration": None}
    )
    target = calibration or _recorded_targets(old.manifest.calibration)
    staging = path.with_name(f".{path.name}.growing")
    try:
        save_gallery(staging, torch.cat([old.pooled, new.pooled]), stages, manifest,
                     float16=old.manifest.storage_dtype == "float16")  # fmt: skip
        calibrate_gallery(staging, runtime, target, progress=progress, backbones=backbones)
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)
    return GrowResult(load_gallery(path).manifest, list(added), duplicates)


def _recorded_targets(calibration: Calibration | None) -> CalibrationConfig:
    """The calibration settings a gallery was calibrated with (defaults for what it does not record)."""
    if calibration is None:
        return CalibrationConfig()
    recorded: dict[str, object] = {
        "target_false_reject_rate": calibration.target_false_reject_rate,
        "pixel_target_rate": calibration.pixel_target_rate,
        "tail": calibration.tail,
    }
    if calibration.method != "holdout":
        recorded["leave_out"] = calibration.method
    for key in ("neighbours_left_out", "folds", "tail_fraction"):
        if getattr(calibration, key) is not None:
            recorded[key] = getattr(calibration, key)
    return CalibrationConfig.model_validate(recorded)

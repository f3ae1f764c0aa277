"""Building a gallery from known-good images, and growing it; every write all-or-nothing."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from inspector.config.calibration import CalibrationConfig
from inspector.config.model import ModelConfig
from inspector.config.runtime import RuntimeConfig
from inspector.core.errors import InspectorError
from inspector.core.names import IMAGE_SUFFIXES
from inspector.model.digest import file_sha256
from inspector.model.engine import BackboneCache, FeatureEngine, Features, Inspector, iter_batches
from inspector.model.gallery import load_gallery, save_gallery, staged_replace
from inspector.model.manifest import GALLERY_FORMAT_VERSION, Calibration, GalleryManifest, SourceImage
from inspector.model.preprocess import read_image
from inspector.model.settings import manifest_preprocessing, spade_params
from inspector.model.thresholds import (
    HELD_OUT_METHODS,
    MIN_CALIBRATION_IMAGES,
    calibrate_gallery,
    calibration_steps,
    utc_now,
)

Progress = Callable[[int], None]


class BuildError(InspectorError):
    """A gallery cannot be built from the given images (the message names the folder or file)."""


def list_images(folder: Path) -> list[Path]:
    """Image files directly in a folder, sorted by name (see :func:`subfolders_with_images`).

    Raises:
        BuildError: the folder is missing or holds no image.
    """
    if not folder.is_dir():
        raise BuildError(f"{folder}: not a folder")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise BuildError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return paths


def subfolders_with_images(folder: Path) -> dict[Path, int]:
    """Subfolders of ``folder`` (any depth) holding images, with their counts: what :func:`list_images` leaves."""
    counts: dict[Path, int] = {}
    for path in sorted(folder.rglob("*")) if folder.is_dir() else ():
        if path.parent != folder and path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            counts[path.parent] = counts.get(path.parent, 0) + 1
    return counts


def extract_all(
    engine: FeatureEngine,
    paths: Sequence[Path],
    progress: Progress | None = None,
    sizes: list[tuple[int, int]] | None = None,
) -> Features:
    """Features of every image (on CPU), read and batched by the engine's batch size.

    Peak memory is the features of all images plus one batch (``runtime.batch_size`` images) in the backbone.
    ``sizes``, when given, receives each image's (width, height) in pixels.
    """
    pooled: list[torch.Tensor] = []
    stages: dict[int, list[torch.Tensor]] = {s: [] for s in engine.config.stages}
    for batch in iter_batches(list(paths), engine.runtime.batch_size):
        images = [read_image(p) for p in batch]
        if sizes is not None:
            sizes.extend((im.shape[1], im.shape[0]) for im in images)
        feats, _ = engine.extract(images, {})
        pooled.append(feats.pooled.cpu())
        for s, t in feats.stages.items():
            stages[s].append(t.cpu())
        if progress:
            progress(len(batch))
    return Features(torch.cat(pooled), {s: torch.cat(v) for s, v in stages.items()})


def source_image(path: Path, sha256: str, size: tuple[int, int]) -> SourceImage:
    """The manifest record of one gallery image: name, hash and size in pixels."""
    return SourceImage(name=path.name, sha256=sha256, width_px=size[0], height_px=size[1])


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

    A gallery that is to serve is built with :func:`build_and_calibrate`, which replaces a file only with a
    calibrated one; this step alone is ``gallery build --no-calibrate``.

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
    sizes: list[tuple[int, int]] = []
    feats = extract_all(engine, images, progress, sizes)
    manifest = GalleryManifest(
        format_version=GALLERY_FORMAT_VERSION,
        backbone=engine.spec.name,
        weights_sha256=engine.spec.weights_sha256,
        preprocessing=manifest_preprocessing(config, engine.spec),
        stages=list(config.stages),
        stage_shapes={},
        spade=spade_params(config),
        image_count=len(images),
        sources=[source_image(p, file_sha256(p), size) for p, size in zip(images, sizes, strict=True)],
        created_at=utc_now(),
        storage_dtype="float16" if float16 else "float32",
        content_sha256="",
        calibration=None,
    )
    return save_gallery(out, feats.pooled, feats.stages, manifest, float16=float16)


def build_and_calibrate(
    images: Sequence[Path],
    out: Path,
    config: ModelConfig,
    runtime: RuntimeConfig,
    calibration: CalibrationConfig,
    float16: bool = False,
    progress: Callable[[str, int], Progress | None] | None = None,
    backbones: BackboneCache | None = None,
) -> tuple[GalleryManifest, Calibration]:
    """Build a gallery and calibrate it leave-out; ``out`` is replaced only by the calibrated, verified file.

    Until both steps succeed the work lives in a staging file beside ``out``: an error, a refused
    calibration or Ctrl-C leaves an existing ``out`` byte for byte as it was.

    Args:
        progress: called with a step name and its image count, returns that step's per-batch callback.

    Returns:
        The manifest as built and the calibration it was given.
    """
    backbones = backbones if backbones is not None else BackboneCache()

    def step(name: str, total: int) -> Progress | None:
        return progress(name, total) if progress else None

    with staged_replace(out, "building") as staging:
        manifest = build_gallery(
            images, staging, config, runtime, float16, step("features", len(images)), backbones
        )
        steps = calibration_steps(len(images), config.stage_fusion)
        cal = calibrate_gallery(staging, runtime, calibration, None, step("calibration", steps), backbones)
    return manifest, cal


@dataclass(frozen=True)
class GrowResult:
    """What ``add_to_gallery`` did: the manifest written, the images added, the duplicates refused, and
    whether the calibration was redone (False: a hold-out calibration kept until its folder is given)."""

    manifest: GalleryManifest
    added: list[Path]
    duplicates: list[tuple[Path, str]]  # (file, the source it duplicates)
    recalibrated: bool


def new_images(
    gallery: GalleryManifest, images: Sequence[Path]
) -> tuple[dict[Path, str], list[tuple[Path, str]]]:
    """Split ``images`` into new ones (with their SHA-256) and duplicates (with the source they repeat)."""
    known = {s.sha256: s.name for s in gallery.sources}
    added: dict[Path, str] = {}
    duplicates: list[tuple[Path, str]] = []
    for image in images:
        digest = file_sha256(image)
        if digest in known:
            duplicates.append((image, known[digest]))
        else:
            known[digest] = image.name
            added[image] = digest
    return added, duplicates


def add_to_gallery(
    path: Path,
    images: Sequence[Path],
    runtime: RuntimeConfig,
    calibration: CalibrationConfig | None = None,
    progress: Progress | None = None,
    backbones: BackboneCache | None = None,
    normal_images: Sequence[Path] | None = None,
) -> GrowResult:
    """Append known-good images to a gallery (SPADE needs no training: more rows), then re-calibrate it.

    Images whose SHA-256 is already in the gallery (or repeated among ``images``) are refused. Features are
    extracted with the gallery's own recorded settings. The calibration keeps the method it had: a leave-out
    one is redone the same way; a hold-out one is redone on ``normal_images``, and without them the old
    thresholds are kept (they were set on the smaller gallery: re-run the hold-out to update them). The grown
    gallery is written beside the file and renamed over it only once complete and verified.

    Args:
        path: the gallery file.
        images: new known-good images.
        runtime: device, arithmetic and weights files.
        calibration: target rates; default: the ones the gallery was calibrated at (1% when it never was).
        progress: called with the number of images done (features, then calibration).
        backbones: shared backbones.
        normal_images: the hold-out folder's images, to redo a hold-out calibration.

    Raises:
        BuildError: no new image (all duplicates).
        GalleryError: the gallery does not load.
        CalibrationError: the re-calibration is refused (overlap, degenerate).
        ImageReadError: an image cannot be read (the message names it).
    """
    inspector = Inspector.from_gallery(path, runtime, require_calibration=False, backbones=backbones)
    old = inspector.gallery
    added, duplicates = new_images(old.manifest, images)
    if not added:
        raise BuildError(f"{path}: no new image to add ({len(duplicates)} already in the gallery)")
    sizes: list[tuple[int, int]] = []
    new = extract_all(inspector.engine, list(added), progress, sizes)
    stages = {s: torch.cat([old.stages[s], new.stages[s]]) for s in old.stages}
    sources = [
        *old.manifest.sources,
        *(source_image(p, d, size) for (p, d), size in zip(added.items(), sizes, strict=True)),
    ]
    old_cal = old.manifest.calibration
    keep = (
        old_cal is not None
        and old_cal.method in HELD_OUT_METHODS
        and not normal_images
        and calibration is None
    )
    manifest = old.manifest.model_copy(
        update={"image_count": len(sources), "sources": sources, "calibration": old_cal if keep else None}
    )
    target = calibration or _recorded_targets(old_cal)
    with staged_replace(path, "growing") as staging:
        save_gallery(staging, torch.cat([old.pooled, new.pooled]), stages, manifest,
                     float16=old.manifest.storage_dtype == "float16")  # fmt: skip
        if not keep:
            calibrate_gallery(staging, runtime, target, normal_images, progress=progress, backbones=backbones)
    return GrowResult(load_gallery(path).manifest, list(added), duplicates, recalibrated=not keep)


def _recorded_targets(calibration: Calibration | None) -> CalibrationConfig:
    """The calibration settings a gallery was calibrated with (defaults for what it does not record)."""
    if calibration is None:
        return CalibrationConfig()
    recorded: dict[str, object] = {
        "target_false_reject_rate": calibration.target_false_reject_rate,
        "pixel_target_rate": calibration.pixel_target_rate,
        "tail": calibration.tail,
    }
    if calibration.method not in HELD_OUT_METHODS:
        recorded["leave_out"] = calibration.method
    for key in ("neighbours_left_out", "folds", "tail_fraction"):
        if getattr(calibration, key) is not None:
            recorded[key] = getattr(calibration, key)
    return CalibrationConfig.model_validate(recorded)


@dataclass(frozen=True)
class Reteach:
    """A re-teach from judged parts: each image's verdict before and after, and the gallery it produced."""

    goods: dict[Path, tuple[str, str]]  # parts judged good (false rejects): (verdict before, after)
    defects: dict[Path, tuple[str, str]]  # parts judged defective: (verdict before, after)
    grown: GrowResult | None  # None when refused

    @property
    def fixed(self) -> list[Path]:
        """Judged-good parts that did not pass before and pass now."""
        return [p for p, (b, a) in self.goods.items() if b != "PASS" and a == "PASS"]

    @property
    def newly_passed(self) -> list[Path]:
        """Confirmed defects that were caught (FAIL or REVIEW) before and would pass now."""
        return [p for p, (b, a) in self.defects.items() if b != "PASS" and a == "PASS"]


class ReteachRefused(BuildError):
    """The new gallery would pass confirmed defects (the message names them); nothing was written."""


def _verdicts(
    path: Path, images: Sequence[Path], runtime: RuntimeConfig, backbones: BackboneCache
) -> list[str]:
    inspector = Inspector.from_gallery(path, runtime, backbones=backbones)
    verdicts: list[str] = []
    for batch in iter_batches(list(images), runtime.batch_size):
        verdicts += [r.verdict for r in inspector.score([read_image(p) for p in batch])]
    return verdicts


def reteach(
    path: Path,
    goods: Sequence[Path],
    defects: Sequence[Path],
    runtime: RuntimeConfig,
    force: bool = False,
    progress: Progress | None = None,
) -> Reteach:
    """Add the parts judged good (false rejects) to the gallery, re-calibrated as it was, and replace the file
    only when no confirmed defect that was caught would now pass (unless ``force``).

    Raises:
        ReteachRefused: confirmed defects would pass (naming them); the file is left as it was.
        BuildError: no judged-good image is new to the gallery.
    """
    backbones = BackboneCache()
    before = _verdicts(path, [*goods, *defects], runtime, backbones)
    with staged_replace(path, "reteaching", copy_existing=True) as staging:
        grown = add_to_gallery(staging, goods, runtime, progress=progress, backbones=backbones)
        after = _verdicts(staging, [*goods, *defects], runtime, backbones)
        n = len(goods)
        result = Reteach(
            dict(zip(goods, zip(before[:n], after[:n], strict=True), strict=True)),
            dict(zip(defects, zip(before[n:], after[n:], strict=True), strict=True)),
            grown,
        )
        if result.newly_passed and not force:
            names = ", ".join(str(p) for p in result.newly_passed)
            raise ReteachRefused(
                f"{path}: the re-taught gallery would pass {len(result.newly_passed)} confirmed defect(s) it "
                f"catches today: {names}; nothing was written (--force replaces it anyway)"
            )
    return result

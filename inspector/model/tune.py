"""Thresholds from labelled parts: good and defective images an engineer sorted, the false-reject target met
with the fewest escapes, each rate with its binomial bounds."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from inspector.config.calibration import CalibrationConfig
from inspector.config.runtime import RuntimeConfig
from inspector.model import calibration as calib
from inspector.model.engine import BackboneCache, Inspector, iter_batches
from inspector.model.manifest import Calibration
from inspector.model.preprocess import read_image
from inspector.model.thresholds import CalibrationError, Progress, calibrate_gallery

MIN_DEFECT_IMAGES = 1


@dataclass(frozen=True)
class Tuned:
    """The calibration written, and what it does on the labelled defects."""

    calibration: Calibration
    n_defects: int
    escaped: list[Path]  # defects at or below the image threshold (PASS, or REVIEW when there is a band)
    passed: list[
        Path
    ]  # defects that PASS (below the review threshold, or the image threshold without a band)

    def escape_bounds(self) -> tuple[float, float]:
        """Two-sided 95% Clopper-Pearson interval of the escape rate (defects not FAILed)."""
        return calib.clopper_pearson(len(self.escaped), self.n_defects)


def good_images_needed(target_false_reject_rate: float) -> int:
    """Labelled good images a threshold at the target rate needs: one image above it per target (the target's
    quantile lies inside the data only from 1 / rate images on)."""
    return math.ceil(1.0 / target_false_reject_rate - 1e-9)


def tune_gallery(
    path: Path,
    goods: Sequence[Path],
    defects: Sequence[Path],
    runtime: RuntimeConfig,
    calibration: CalibrationConfig,
    progress: Progress | None = None,
) -> Tuned:
    """Set the image (and review) threshold from labelled good images, the lowest that meets the false-reject
    target on them (so the fewest escapes), and count what it does on the labelled defects.

    The file is replaced as :func:`calibrate_gallery` replaces it (validated, all or nothing); labelled good
    images that are gallery images are refused.

    Raises:
        CalibrationError: too few labelled good or defective images (saying how many are needed), overlap
            with the gallery, or a degenerate result.
    """
    needed = good_images_needed(calibration.target_false_reject_rate)
    if len(goods) < needed:
        raise CalibrationError(
            f"{path}: {len(goods)} labelled good images cannot set a {calibration.target_false_reject_rate:.2%} "
            f"false-reject threshold: at least {needed} are needed ({calib.images_needed(calibration.target_false_reject_rate)} "
            "to verify it at 95% with no failure)"
        )
    if len(defects) < MIN_DEFECT_IMAGES:
        raise CalibrationError(f"{path}: no labelled defective image: tuning counts escapes on them")
    cal = calibrate_gallery(path, runtime, calibration, goods, progress, method="labelled")
    backbones = BackboneCache()
    inspector = Inspector.from_gallery(path, runtime, backbones=backbones)
    escaped: list[Path] = []
    passed: list[Path] = []
    for batch in iter_batches(list(defects), runtime.batch_size):
        for image, result in zip(batch, inspector.score([read_image(p) for p in batch]), strict=True):
            if result.verdict != "FAIL":
                escaped.append(image)
            if result.verdict == "PASS":
                passed.append(image)
    return Tuned(cal, len(defects), escaped, passed)

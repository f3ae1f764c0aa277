"""The gallery manifest schema."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated, Literal

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from inspector.config.model import VALID_STAGES
from inspector.model.calibration import TAIL_FRACTION_DEFAULT, threshold_for

GALLERY_FORMAT_VERSION = 2
LEGACY_FORMAT_VERSION = (
    1  # before the whole-gallery hash: refused at load, rewritten by ``gallery calibrate``
)
RATE_EPSILON = 1e-9
MEDIAN_RTOL = 1e-9
_SHA256_PATTERN = r"^[0-9a-f]{64}$"
_RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|\+00:00)$")


def _check_rfc3339_utc(value: str) -> str:
    if not _RFC3339_UTC.match(value):
        raise ValueError(f"must be an RFC 3339 UTC timestamp like 2024-05-01T12:00:00Z, got {value!r}")
    datetime.fromisoformat(value[:19])  # raises ValueError on an impossible date or time of day
    return value


def _one_of(*allowed: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"must be one of {list(allowed)}, got {value!r}")
        return value

    return check


def threshold_at_rate(values: Sequence[float], rate: float) -> float:
    """The smallest observed value such that at most ``rate`` of the values lie strictly above it.

    Raises:
        ValueError: no values.
    """
    n = len(values)
    if n == 0:
        raise ValueError("no values to calibrate from")
    allowed_above = min(math.floor(rate * n + RATE_EPSILON), n - 1)
    return float(sorted(values)[n - 1 - allowed_above])


def median(values: Sequence[float]) -> float:
    """The median (the mean of the two middle values for an even count), as numpy computes it."""
    ordered, n = sorted(values), len(values)
    mid = n // 2
    return float(ordered[mid]) if n % 2 else (float(ordered[mid - 1]) + float(ordered[mid])) / 2.0


UtcTimestamp = Annotated[str, AfterValidator(_check_rfc3339_utc)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class Preprocessing(_Strict):
    """How images were turned into backbone input; live frames must be preprocessed identically."""

    resize_px: int = Field(ge=1)
    crop_px: int = Field(ge=1)
    keep_aspect: bool
    input_scale: Annotated[str, AfterValidator(_one_of("minus1_1", "imagenet"))]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    color: Annotated[str, AfterValidator(_one_of("rgb"))] = "rgb"

    @model_validator(mode="after")
    def _crop_fits(self) -> Preprocessing:
        if self.crop_px > self.resize_px:
            raise ValueError(f"crop_px ({self.crop_px}) must not exceed resize_px ({self.resize_px})")
        if any(s <= 0.0 for s in self.std):
            raise ValueError(f"std values must be positive, got {self.std}")
        return self


class SpadeParams(_Strict):
    """SPADE parameters the gallery was built and calibrated for."""

    image_k: int = Field(ge=1)
    pixel_k: int = Field(ge=1)
    blur_sigma_px: float = Field(ge=0.0)
    neighbourhood_px: int = Field(ge=1)
    image_score: str = Field(min_length=1)
    stage_fusion: str = Field(default="mean", min_length=1)
    pixel_search: str = Field(default="full", min_length=1)
    window_cells: int = Field(default=2, ge=1)


class SourceImage(_Strict):
    """One known-good image the gallery was built from."""

    name: str = Field(min_length=1)
    sha256: str = Field(pattern=_SHA256_PATTERN)
    # absent in galleries built before sizes were recorded (then not in the manifest, nor in its hash)
    width_px: int | None = Field(default=None, ge=1, exclude_if=lambda v: v is None)
    height_px: int | None = Field(default=None, ge=1, exclude_if=lambda v: v is None)


class Calibration(_Strict):
    """Thresholds set from normal images only, with the normal scores they were computed from.

    The record lets a loader recompute both thresholds (:meth:`inconsistencies`), so a threshold edited by hand
    is refused even when the file's hash was recomputed too.
    """

    image_threshold: float
    target_false_reject_rate: float = Field(gt=0.0, lt=1.0)
    pixel_threshold: float
    pixel_target_rate: float = Field(gt=0.0, lt=1.0)
    method: Annotated[
        str, AfterValidator(_one_of("leave_one_out", "leave_m_out", "k_fold", "holdout", "labelled"))
    ]
    n_images: int = Field(ge=1)
    score_median: float
    map_max_median: float
    stage_scales: list[float] | None = Field(
        default=None, description="Mean nearest-feature distance per used stage on normal images."
    )
    image_score_median: float | None = Field(
        default=None,
        description="Median image score of the normal images in the gallery's image_score mode: the reference "
        "of the daemon's score drift gauges.",
    )
    normal_scores: list[float] = Field(
        min_length=1,
        description="Image score of each normal image (image_score mode): image_threshold's source.",
    )
    normal_knn: list[float] = Field(
        min_length=1, description="kNN score of each normal image: score_median's."
    )
    normal_map_max: list[float] = Field(
        min_length=1, description="Anomaly-map maximum of each normal image: pixel_threshold's source."
    )
    created_at: UtcTimestamp
    # How the threshold was read from the normal scores, and what they support (absent: empirical, unstated).
    neighbours_left_out: int | None = Field(default=None, ge=1, description="m of leave_m_out.")
    folds: int | None = Field(default=None, ge=2, description="Folds of k_fold.")
    tail: Annotated[str, AfterValidator(_one_of("empirical", "gaussian", "pareto"))] = "empirical"
    tail_fraction: float | None = Field(default=None, gt=0.0, lt=1.0, description="Share the tail fit used.")
    empirical_threshold: float | None = Field(
        default=None,
        description="The plain quantile of the normal scores at the target rate (for comparison).",
    )
    normal_above_threshold: int | None = Field(
        default=None, ge=0, description="Normal calibration images scoring above the image threshold."
    )
    false_reject_upper_bound: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="One-sided 95% Clopper-Pearson upper bound on the false-reject rate these images support.",
    )
    images_needed: int | None = Field(
        default=None, ge=1, description="Normal images a zero-failure check of the target needs at 95%."
    )
    # The review band (absent: none; then not in the manifest, nor in its hash)
    target_review_rate: float | None = Field(
        default=None, gt=0.0, lt=1.0, exclude_if=lambda v: v is None,
        description="Fraction of normal parts the review band sends to REVIEW.",
    )  # fmt: skip
    review_threshold: float | None = Field(
        default=None, exclude_if=lambda v: v is None,
        description="Scores above it (and not above image_threshold) are REVIEW: the normal scores' threshold at "
        "target_false_reject_rate + target_review_rate.",
    )  # fmt: skip

    @property
    def review_rate_total(self) -> float | None:
        """The rate the review threshold is read at (false rejects plus reviews), None without a band."""
        if self.target_review_rate is None:
            return None
        return self.target_false_reject_rate + self.target_review_rate

    def verdict_of(self, score: float) -> Literal["PASS", "REVIEW", "FAIL"]:
        """FAIL above the image threshold; REVIEW above the review threshold (when there is a band); else PASS."""
        if score > self.image_threshold:
            return "FAIL"
        if self.review_threshold is not None and score > self.review_threshold:
            return "REVIEW"
        return "PASS"

    def threshold_of(self, values: list[float], rate: float) -> float:
        """The threshold this record's tail estimate reads from recorded scores at a rate."""
        if self.tail == "empirical":
            return threshold_at_rate(values, rate)
        fraction = self.tail_fraction or TAIL_FRACTION_DEFAULT
        return threshold_for(np.array(values, dtype=np.float64), rate, self.tail, fraction)  # type: ignore[arg-type]

    def _review_inconsistencies(self) -> list[str]:
        total = self.review_rate_total
        if total is None:
            return [] if self.review_threshold is None else ["review_threshold without target_review_rate"]
        if total >= 1.0:
            return [f"target_false_reject_rate + target_review_rate is {total!r}, not below 1"]
        review = self.threshold_of(self.normal_scores, total)
        if review != self.review_threshold:
            return [
                (
                    f"review_threshold {self.review_threshold!r} is not the {total:g} rate threshold of the recorded "
                    f"normal scores ({review!r})"
                )
            ]
        return []

    def degeneracies(self) -> list[str]:
        """Why these thresholds cannot serve (empty when they can): a zero or non-finite stage scale, or a
        threshold at or below the smallest normal value it was set from (every normal part would fail)."""
        problems = []
        if self.stage_scales is not None and not all(math.isfinite(v) and v > 0 for v in self.stage_scales):
            problems.append(
                f"stage scales {self.stage_scales} are not all positive: the normal images lie at distance 0 "
                "from the gallery (are they gallery images?)"
            )
        checked = [
            ("image threshold", self.image_threshold, self.normal_scores),
            ("pixel threshold", self.pixel_threshold, self.normal_map_max),
        ]
        if self.review_threshold is not None:
            checked.append(("review threshold", self.review_threshold, self.normal_scores))
        for name, threshold, values in checked:
            if not math.isfinite(threshold) or threshold <= min(values):
                problems.append(
                    f"{name} {threshold:.6g} is at or below the smallest normal score {min(values):.6g}"
                )
        return problems

    def inconsistencies(self) -> list[str]:
        """What disagrees with the recorded normal scores (empty when the calibration is consistent)."""
        counts = {len(self.normal_scores), len(self.normal_knn), len(self.normal_map_max)}
        if counts != {self.n_images}:
            return [f"n_images {self.n_images} but {sorted(counts)} normal scores recorded"]
        problems = []
        image = self.threshold_of(self.normal_scores, self.target_false_reject_rate)
        if image != self.image_threshold:
            problems.append(
                f"image_threshold {self.image_threshold!r} is not the {self.target_false_reject_rate!r} rate "
                f"threshold of the recorded normal scores ({image!r})"
            )
        problems += self._review_inconsistencies()
        pixel = self.threshold_of(self.normal_map_max, self.pixel_target_rate)
        if pixel != self.pixel_threshold:
            problems.append(
                f"pixel_threshold {self.pixel_threshold!r} is not the {self.pixel_target_rate!r} rate "
                f"threshold of the recorded map maxima ({pixel!r})"
            )
        medians = [
            ("score_median", self.score_median, median(self.normal_knn) or 1.0),
            ("map_max_median", self.map_max_median, median(self.normal_map_max) or 1.0),
            ("image_score_median", self.image_score_median, median(self.normal_scores)),
        ]
        for name, stored, recorded in medians:
            if stored is not None and not math.isclose(stored, recorded, rel_tol=MEDIAN_RTOL):
                problems.append(f"{name} {stored!r} is not the median of the recorded scores ({recorded!r})")
        return problems


class GalleryManifest(_Strict):
    """Everything needed to check a gallery matches the running model; stored as JSON in the file header.

    ``storage_dtype``, ``stage_shapes`` and ``content_sha256`` are filled by :func:`save_gallery`. The file's
    gallery hash covers this whole manifest (and, through ``content_sha256``, the tensors).
    """

    format_version: int = GALLERY_FORMAT_VERSION
    backbone: str = Field(min_length=1)
    weights_sha256: str = Field(pattern=_SHA256_PATTERN)
    preprocessing: Preprocessing
    stages: list[int] = Field(min_length=1, max_length=len(VALID_STAGES))
    stage_shapes: dict[str, list[int]] = Field(default_factory=dict)
    spade: SpadeParams
    image_count: int = Field(ge=1)
    sources: list[SourceImage]
    created_at: UtcTimestamp
    storage_dtype: Literal["float32", "float16"] = "float32"
    content_sha256: str = Field(default="", pattern=r"^([0-9a-f]{64})?$")
    calibration: Calibration | None = None

    @field_validator("stages")
    @classmethod
    def _stages_valid(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value) or any(s not in VALID_STAGES for s in value):
            raise ValueError(f"must be distinct values from {VALID_STAGES}, got {value}")
        return value

    @field_validator("stage_shapes")
    @classmethod
    def _shapes_positive(cls, value: dict[str, list[int]]) -> dict[str, list[int]]:
        for name, shape in value.items():
            if not shape or any(d < 1 for d in shape):
                raise ValueError(f"{name}: dimensions must be positive, got {shape}")
        return value

"""The ``[calibration]`` section: how thresholds are set from normal images only."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from inspector.config.base import StrictModel

LeaveOut = Literal["leave_one_out", "leave_m_out", "k_fold"]
Tail = Literal["empirical", "gaussian", "pareto"]


class CalibrationConfig(StrictModel):
    """Target rates of ``inspector gallery build`` / ``calibrate``; a gallery records what it was given."""

    target_false_reject_rate: float = Field(
        0.01, gt=0.0, lt=0.5, description="Fraction of normal parts allowed to fail (image threshold)."
    )
    target_review_rate: float | None = Field(
        None,
        gt=0.0,
        lt=0.5,
        description="Fraction of normal parts sent to REVIEW (a second threshold below the image threshold: "
        "score above it but not above the image threshold -> REVIEW). Unset: no review band, PASS or FAIL.",
    )
    pixel_target_rate: float = Field(
        0.01,
        gt=0.0,
        lt=0.5,
        description="Fraction of normal images allowed any mask pixel: the pixel threshold is that quantile "
        "of the per-image maximum of normal anomaly maps.",
    )
    leave_out: LeaveOut = Field(
        "leave_one_out",
        description="Without separate normal images, what each gallery image is scored without: "
        "leave_one_out (itself), leave_m_out (itself and its m most similar gallery images: near-duplicates "
        "such as sequential captures), k_fold (its whole fold of consecutive gallery images).",
    )
    neighbours_left_out: int = Field(
        5, ge=1, le=1000, description="m of leave_m_out: most similar gallery images left out with each one."
    )
    folds: int = Field(5, ge=2, le=100, description="Folds of k_fold (contiguous blocks in file name order).")
    tail: Tail = Field(
        "empirical",
        description="How the threshold is read from the normal scores: empirical (their quantile), gaussian "
        "(a normal fit to all of them), pareto (a generalised Pareto fit to their upper tail).",
    )
    tail_fraction: float = Field(
        0.2, gt=0.0, lt=1.0, description="Share of the highest normal scores the pareto tail is fitted to."
    )

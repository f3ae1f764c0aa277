"""The ``[calibration]`` section: how thresholds are set from normal images only."""

from __future__ import annotations

from pydantic import Field

from inspector.config.base import StrictModel


class CalibrationConfig(StrictModel):
    """Target rates of ``inspector gallery build`` / ``calibrate``; a gallery records what it was given."""

    target_false_reject_rate: float = Field(
        0.01, gt=0.0, lt=0.5, description="Fraction of normal parts allowed to fail (image threshold)."
    )
    pixel_target_rate: float = Field(
        0.01,
        gt=0.0,
        lt=0.5,
        description="Fraction of normal images allowed any mask pixel: the pixel threshold is that quantile "
        "of the per-image maximum of normal anomaly maps.",
    )

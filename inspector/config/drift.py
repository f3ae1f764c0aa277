"""The ``[drift]`` section: rolling statistics of PASS scores against the gallery's calibration."""

from __future__ import annotations

from pydantic import Field, model_validator

from inspector.config.base import StrictModel


class DriftConfig(StrictModel):
    """Per camera: rolling median and 99th percentile of PASS scores, and the median's ratio to calibration."""

    window_pass_scores: int = Field(
        1000, ge=10, le=1_000_000, description="PASS scores in the rolling window (the latest ones)."
    )
    max_age_s: float = Field(
        3600.0, gt=0.0, le=7 * 86400.0, description="Scores older than this many seconds leave the window."
    )
    min_pass_scores: int = Field(
        50, ge=1, description="Scores needed in the window before the gauges are exported (NaN until then)."
    )

    @model_validator(mode="after")
    def _min_fits_window(self) -> DriftConfig:
        if self.min_pass_scores > self.window_pass_scores:
            raise ValueError(
                f"min_pass_scores ({self.min_pass_scores}) must not exceed window_pass_scores "
                f"({self.window_pass_scores})"
            )
        return self

"""The ``[supervision]`` section: how many restarts of camera processes and the model worker are allowed."""

from __future__ import annotations

from pydantic import Field

from inspector.config.base import StrictModel


class SupervisionConfig(StrictModel):
    """The restart budget: past it the daemon logs, counts and exits non-zero so systemd restarts it whole."""

    restart_budget: int = Field(
        5,
        ge=1,
        le=1000,
        description="Restarts of one camera process, or of the model worker, allowed within restart_window_s.",
    )
    restart_window_s: float = Field(
        60.0, gt=0.0, le=86_400.0, description="Seconds over which restarts are counted against the budget."
    )

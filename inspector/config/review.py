"""The ``[review]`` section: the operators' review page (login, roles, the queue of parts to judge)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from inspector.config.base import StrictModel


class ReviewConfig(StrictModel):
    """A page beside the live view where operators judge REVIEW and FAIL parts and engineers export them."""

    enabled: bool = Field(
        False, description="Serve /review on the live view's server (needs [liveview] and [parts])."
    )
    users_file: Path | None = Field(
        None,
        description='TOML file: [users] name = "pbkdf2_sha256$..." (inspector opcua hash-password NAME) and '
        '[roles] name = "operator" or "engineer".',
    )
    session_idle_s: float = Field(
        900.0, gt=0.0, le=86_400.0, description="A session idle this long is logged out."
    )
    lockout_failures: int = Field(
        5, ge=1, le=100, description="Failed logins of a user before it is locked out."
    )
    lockout_s: float = Field(300.0, gt=0.0, le=86_400.0, description="How long a locked-out user must wait.")
    queue_limit: int = Field(50, ge=1, le=1000, description="Parts the page lists at once (oldest first).")
    export_dir: Path | None = Field(
        None,
        description="Where an engineer's export from the page writes a labelled folder (one per export); "
        "None: $STATE_DIRECTORY/review-exports, else the page cannot export.",
    )

    @model_validator(mode="after")
    def _users_when_enabled(self) -> ReviewConfig:
        if self.enabled and self.users_file is None:
            raise ValueError("users_file: the review page needs a users file when enabled")
        return self

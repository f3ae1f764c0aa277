"""The ``[batching]`` section: how frames from all cameras are grouped for the model worker."""

from __future__ import annotations

from pydantic import Field, model_validator

from inspector.config.base import StrictModel


class BatchingConfig(StrictModel):
    """Batch size and age bounds, and the deadline after which a frame gets a TIMEOUT verdict."""

    max_batch: int = Field(8, ge=1, le=256, description="A batch is sent as soon as it has this many frames.")
    max_wait_ms: float = Field(
        0.0,
        ge=0.0,
        le=10_000.0,
        description=(
            "...or as soon as its oldest frame was captured this many milliseconds ago. The default 0 is "
            "work-conserving: a batch leaves as soon as the model worker is free, holding every frame that "
            "arrived while it was busy (up to max_batch), so a frame never waits beside an idle worker. A "
            "positive value lingers to gather bigger batches at light load, at that cost in latency."
        ),
    )
    deadline_ms: float = Field(
        2000.0,
        gt=0.0,
        le=600_000.0,
        description="A frame not scored within this many milliseconds of capture gets a TIMEOUT verdict.",
    )

    @model_validator(mode="after")
    def _deadline_after_wait(self) -> BatchingConfig:
        if self.deadline_ms <= self.max_wait_ms:
            raise ValueError(
                f"deadline_ms ({self.deadline_ms}) must be greater than max_wait_ms ({self.max_wait_ms})"
            )
        return self

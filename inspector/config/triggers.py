"""The ``[triggers]`` section: the ZeroMQ PULL socket that receives part triggers from the line."""

from __future__ import annotations

from pydantic import Field

from inspector.config.base import StrictModel


class TriggersConfig(StrictModel):
    """Where triggers arrive; bound only when a camera has ``trigger = "external"``."""

    bind: str = Field(
        "tcp://127.0.0.1:5560", description="ZeroMQ endpoint of the PULL socket (JSON trigger messages)."
    )
    rcvhwm: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="Triggers queued before the sender blocks (ZeroMQ high-water mark).",
    )

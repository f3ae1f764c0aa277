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
    max_at_past_ms: float = Field(
        10_000.0,
        gt=0.0,
        le=3_600_000.0,
        description="A trigger's at may lie at most this far in the past (on the trigger and control sockets); "
        "older: an ERROR verdict at once (its frame is gone).",
    )
    max_at_future_ms: float = Field(
        2_000.0,
        ge=0.0,
        le=60_000.0,
        description="A trigger's at may lie at most this far in the future (clock skew between PLC and line PC); "
        "later: an ERROR verdict at once, instead of holding back every later trigger of its camera.",
    )

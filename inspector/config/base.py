"""The base of every configuration section."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class StrictModel(BaseModel):
    """Base for every config section: unknown fields are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class HttpListenerConfig(StrictModel):
    """Base of an HTTP endpoint the daemon may serve: off unless enabled, local unless told otherwise."""

    enabled: bool = Field(False, description="Serve this endpoint.")
    bind_address: str = Field(
        "127.0.0.1", description="Address the HTTP server listens on (0.0.0.0: every one)."
    )
    jpeg_quality: int = Field(90, ge=1, le=100, description="JPEG quality of the images served.")

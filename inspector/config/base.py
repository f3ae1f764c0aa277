"""The base of every configuration section."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class StrictModel(BaseModel):
    """Base for every config section: unknown fields are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class HttpLimitsConfig(StrictModel):
    """What one HTTP listener of the daemon holds at most, so no client can exhaust its file descriptors."""

    max_connections: int = Field(
        128, ge=1, le=16_384, description="Connections open at once; more are answered 503 and closed."
    )
    max_connections_per_client: int = Field(
        32, ge=1, le=16_384, description="Connections open at once from one client address; more: 503."
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0.0,
        le=600.0,
        description="A connection that sends no complete request within this long of connecting is closed.",
    )


class HttpListenerConfig(HttpLimitsConfig):
    """Base of an HTTP endpoint the daemon may serve: off unless enabled, local unless told otherwise."""

    enabled: bool = Field(False, description="Serve this endpoint.")
    bind_address: str = Field(
        "127.0.0.1", description="Address the HTTP server listens on (0.0.0.0: every one)."
    )
    jpeg_quality: int = Field(90, ge=1, le=100, description="JPEG quality of the images served.")
    idle_timeout_s: float = Field(
        30.0,
        gt=0.0,
        le=3600.0,
        description="A kept-alive connection with no new request for this long is closed.",
    )
    max_requests_per_connection: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="Requests one kept-alive connection may make; then it is closed.",
    )

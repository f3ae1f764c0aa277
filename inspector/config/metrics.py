"""The ``[metrics]`` section: the Prometheus scrape endpoint and the score histogram's buckets."""

from __future__ import annotations

import itertools
import math

from pydantic import Field, field_validator

from inspector.config.base import HttpLimitsConfig

DEFAULT_SCORE_BUCKETS: tuple[float, ...] = (
    0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0,
)  # fmt: skip
MAX_SCORE_BUCKETS = 40


class MetricsConfig(HttpLimitsConfig):
    """Where ``/metrics`` and ``/healthz`` are served (one request per connection; the limits bound what a
    misbehaving client can hold: a connection lives at most ``header_timeout_s``)."""

    enabled: bool = Field(default=True, description="Serve /metrics over HTTP.")
    max_connections: int = Field(
        32, ge=1, le=16_384, description="Connections open at once; more are answered 503 and closed."
    )
    max_connections_per_client: int = Field(
        8, ge=1, le=16_384, description="Connections open at once from one client address; more: 503."
    )
    header_timeout_s: float = Field(
        5.0,
        gt=0.0,
        le=600.0,
        description="A connection is closed this long after it was accepted, whatever it is doing (a scrape "
        "takes milliseconds).",
    )
    bind_address: str = Field(default="127.0.0.1", description="Address the HTTP server listens on.")
    port: int = Field(default=9108, ge=0, le=65535, description="TCP port; 0 picks a free port.")
    score_buckets: tuple[float, ...] = Field(
        default=DEFAULT_SCORE_BUCKETS,
        min_length=1,
        max_length=MAX_SCORE_BUCKETS,
        description="Upper bounds of the inspector_anomaly_score histogram (strictly increasing); set them "
        "around the calibrated thresholds of your galleries.",
    )

    @field_validator("score_buckets")
    @classmethod
    def _increasing_finite(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not all(math.isfinite(b) for b in value):
            raise ValueError("score_buckets must be finite numbers")
        if any(b >= c for b, c in itertools.pairwise(value)):
            raise ValueError(f"score_buckets must be strictly increasing, got {value}")
        return value

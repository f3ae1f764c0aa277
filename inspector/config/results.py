"""The ``[results]`` section: the HTTP endpoint that serves recent verdicts' images to integrators."""

from __future__ import annotations

from pydantic import Field

from inspector.config.base import HttpListenerConfig


class ResultsConfig(HttpListenerConfig):
    """``GET /results/<camera>/<seq>`` and ``/results/<camera>/latest``: a bounded ring, then the archive."""

    port: int = Field(9110, ge=0, le=65535, description="TCP port; 0 picks a free port.")
    ring_per_camera: int = Field(
        16, ge=1, le=1024, description="Recent verdicts kept in memory per camera (older ones: the archive)."
    )
    ring_max_mb: float = Field(
        256.0, gt=0.0, description="Largest memory the ring may hold in MiB (frames, maps); oldest go first."
    )

"""The ``[liveview]`` section: the live web page of what every camera sees, served by the daemon."""

from __future__ import annotations

from pydantic import Field

from inspector.config.base import HttpListenerConfig


class LiveViewConfig(HttpListenerConfig):
    """A page per daemon: each camera's latest frame with its heatmap, verdict, score and counters."""

    port: int = Field(9111, ge=0, le=65535, description="TCP port; 0 picks a free port.")
    jpeg_quality: int = Field(80, ge=1, le=100, description="JPEG quality of the live images.")
    max_image_fps: float = Field(
        5.0, gt=0.0, le=60.0, description="Most images per second rendered per camera for the page."
    )
    image_width_px: int = Field(
        960,
        ge=64,
        le=8192,
        description="Wider frames are scaled down to this width for the page (less work).",
    )
    max_clients: int = Field(
        32, ge=1, le=1024, description="Browsers connected at once; more are refused (503)."
    )

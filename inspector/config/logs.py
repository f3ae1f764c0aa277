"""The ``[logging]`` section: level and line format."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from inspector.config.base import StrictModel

LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["auto", "json", "console"]


class LoggingConfig(StrictModel):
    """Structured logging of the daemon."""

    level: LogLevel = Field(default="info", description="Lowest level written.")
    format: LogFormat = Field(
        default="auto",
        description="json: one JSON object per line; console: human readable; auto: console on a TTY.",
    )

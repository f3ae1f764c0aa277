"""The ``[[cameras]]`` list: one entry per camera (source, pacing, timeouts, buffering)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from inspector.config.base import StrictModel
from inspector.config.genicam import SOFTWARE, GenicamConfig
from inspector.core.names import CAMERA_NAME_PATTERN

SourceKind = Literal["auto", "device", "url", "file", "folder", "gstreamer", "genicam"]
TriggerMode = Literal["free_run", "external"]
URL_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "rtmp://", "udp://", "tcp://", "srt://")
FILE_SOURCE_KINDS = ("file", "folder")


class CameraConfig(StrictModel):
    """One camera of the ``[[cameras]]`` config list."""

    name: str = Field(
        description="Unique name: letters, digits, _ and -, starting with a letter or digit, at most 64 "
        "characters (it becomes the bus topic verdict.<name> and a metrics label)."
    )
    source: str = Field(
        min_length=1,
        description='Device index "0", URL, video file, folder, GStreamer pipeline, or for kind genicam the '
        "camera's device id (vendor-model-serial), serial number or IP address.",
    )
    kind: SourceKind = Field(
        "auto", description="Source type; auto guesses it from source (never genicam: name it)."
    )
    fps: float | None = Field(
        None, gt=0, le=1000, description="File/folder pacing, frames/s; None: file rate."
    )
    loop: bool = Field(False, description="File/folder sources restart at the end.")
    as_fast_as_possible: bool = Field(False, description="File/folder sources are read without pacing.")
    open_timeout_s: float = Field(5.0, gt=0, le=120, description="Seconds allowed to open the source.")
    read_timeout_s: float = Field(5.0, gt=0, le=120, description="Seconds without a frame before reconnect.")
    retry_initial_s: float = Field(0.5, gt=0, le=60, description="First reconnect wait in seconds (doubles).")
    retry_max_s: float = Field(30.0, gt=0, le=3600, description="Longest reconnect wait in seconds.")
    max_frame_px: int = Field(
        25_000_000,
        ge=1,
        description="Largest frame in pixels (width x height) a folder camera scores; a larger file becomes "
        "an ERROR verdict naming it.",
    )
    queue_size: int = Field(8, ge=1, le=1024, description="Frames buffered; when full the oldest is dropped.")
    gallery: Path | None = Field(
        None,
        description="This camera's own gallery (a product named after the file); else product or worker.gallery.",
    )
    product: str | None = Field(None, description="The [[products]] entry this camera inspects at start-up.")
    trigger: TriggerMode = Field(
        "free_run",
        description="free_run: every frame is scored; external: the camera keeps capturing, but only frames "
        "picked by a trigger (ZeroMQ [triggers] socket or the control socket) are scored, one verdict per trigger.",
    )
    trigger_delay_ms: float = Field(
        0.0,
        ge=0.0,
        le=60_000.0,
        description="A trigger picks the first frame captured this long after its time.",
    )
    trigger_timeout_ms: float = Field(
        1000.0,
        gt=0.0,
        le=600_000.0,
        description="A trigger that no frame answers within this long after its pick time gets an ERROR verdict.",
    )

    genicam: GenicamConfig | None = Field(
        None, description="[cameras.genicam]: the GenICam settings of a kind = genicam camera."
    )

    @field_validator("name")
    @classmethod
    def _name_is_a_topic(cls, name: str) -> str:
        if not re.match(CAMERA_NAME_PATTERN, name):
            raise ValueError(
                f"{name!r} cannot be a bus topic: use letters, digits, _ and -, starting with a letter or "
                "digit, at most 64 characters"
            )
        return name

    @model_validator(mode="after")
    def _consistent(self) -> CameraConfig:
        if self.retry_max_s < self.retry_initial_s:
            raise ValueError(f"camera {self.name}: retry_max_s must be >= retry_initial_s")
        if self.gallery is not None and self.product is not None:
            raise ValueError(f"camera {self.name}: set gallery or product, not both")
        if self.resolved_kind() == "device" and not self.source.strip().isdigit():
            raise ValueError(f"camera {self.name}: kind device needs a device index, got {self.source!r}")
        self._consistent_genicam()
        return self

    def _consistent_genicam(self) -> None:
        if self.kind != "genicam":
            if self.genicam is not None:
                raise ValueError(f'camera {self.name}: a [cameras.genicam] table needs kind = "genicam"')
            return
        settings = self.settings
        if settings.trigger_source == SOFTWARE and self.trigger != "external":
            raise ValueError(
                f'camera {self.name}: genicam.trigger_source = "software" needs trigger = "external" '
                "(the PLC's triggers fire the camera)"
            )
        line_paired = settings.line_triggered and self.trigger == "external"
        if line_paired and settings.pairing_window_ms > self.trigger_timeout_ms:
            raise ValueError(f"camera {self.name}: genicam.pairing_window_ms must be <= trigger_timeout_ms")

    @property
    def settings(self) -> GenicamConfig:
        """The GenICam settings (defaults for a camera of another kind, which never reads them)."""
        return self.genicam if self.genicam is not None else GenicamConfig()

    def resolved_kind(self) -> str:
        """Return the concrete source kind, guessing it from ``source`` when kind is auto."""
        if self.kind != "auto":
            return self.kind
        src = self.source.strip()
        if src.isdigit():
            return "device"
        if src.lower().startswith(URL_SCHEMES):
            return "url"
        if "!" in src:
            return "gstreamer"
        return "folder" if Path(src).is_dir() else "file"

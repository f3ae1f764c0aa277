"""The ``[cameras.genicam]`` table: how a GigE Vision / USB3 Vision camera (Aravis) is set up and triggered."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from inspector.config.base import StrictModel

# Pixel formats the camera process converts to BGR (GenICam PFNC names, as the camera's PixelFormat lists them).
PixelFormat = Literal[
    "Mono8", "Mono10", "Mono12", "Mono16", "BayerRG8", "BayerGR8", "BayerGB8", "BayerBG8", "RGB8", "BGR8",
]  # fmt: skip
TriggerActivation = Literal["rising_edge", "falling_edge", "any_edge", "level_high", "level_low"]
TRIGGER_SOURCE_PATTERN = r"^(free_run|software|line[0-9]{1,2})$"
FREE_RUN = "free_run"
SOFTWARE = "software"
MIN_PACKET_BYTES = 576  # the smallest IPv4 datagram every host accepts
MAX_PACKET_BYTES = 16_384  # above the largest jumbo frame a NIC takes (9000 bytes, some 16 KB)


class GenicamConfig(StrictModel):
    """Settings written to a GenICam camera when it is opened; unset fields keep the camera's own value.

    Every value is written and read back before the first frame: a feature the camera lacks or a value it
    refuses is an error naming the camera and the feature.
    """

    pixel_format: PixelFormat | None = Field(
        None, description="PixelFormat written to the camera (Mono8, BayerRG8, RGB8, ...); unset: as it is."
    )
    exposure_us: float | None = Field(
        None, gt=0.0, le=3.6e9, description="Exposure time in microseconds (ExposureTime)."
    )
    gain_db: float | None = Field(None, ge=-100.0, le=100.0, description="Analog gain in dB (Gain).")
    frame_rate_hz: float | None = Field(
        None, gt=0.0, le=100_000.0, description="Acquisition frame rate in frames/s (free_run)."
    )
    trigger_source: str = Field(
        FREE_RUN,
        description="free_run: the camera streams; software: each PLC trigger fires the camera's software "
        "trigger and that frame is the part's; line0, line1, ...: the photo-eye on that input line fires it.",
    )
    trigger_activation: TriggerActivation | None = Field(
        None, description="Edge or level of a line trigger (TriggerActivation); unset: as the camera is."
    )
    packet_size_bytes: int | None = Field(
        None,
        ge=MIN_PACKET_BYTES,
        le=MAX_PACKET_BYTES,
        description="GigE Vision stream packet size (GevSCPSPacketSize); unset: the largest the path "
        "carries, found by Aravis. Needs the NIC's MTU at least this large (jumbo frames: 9000).",
    )
    packet_delay_ns: int | None = Field(
        None,
        ge=0,
        le=1_000_000_000,
        description="GigE Vision inter-packet delay in nanoseconds (GevSCPD): spreads a frame's packets "
        "when several cameras share a link.",
    )
    buffer_count: int = Field(
        8, ge=2, le=256, description="Frame buffers queued to the stream (frames in flight)."
    )
    timeout_ms: float = Field(
        1000.0,
        gt=0.0,
        le=600_000.0,
        description="Longest wait for a software trigger's frame, and for a started frame's last packet: "
        "past it the frame is counted incomplete.",
    )
    pairing_window_ms: float = Field(
        200.0,
        gt=0.0,
        le=60_000.0,
        description="Line triggers: a frame pairs with the oldest waiting PLC trigger when it was captured "
        "within this many milliseconds of the trigger's pick time; outside it, each side ends on its own.",
    )

    @field_validator("trigger_source")
    @classmethod
    def _known_source(cls, source: str) -> str:
        if not re.match(TRIGGER_SOURCE_PATTERN, source):
            raise ValueError(f"{source!r} is not free_run, software or line<N> (line0, line1, ...)")
        return source

    @property
    def line_triggered(self) -> bool:
        """True when the camera's input line fires it (frames come only when the photo-eye does)."""
        return self.trigger_source.startswith("line")

    @property
    def triggered(self) -> bool:
        """True when the camera takes a frame only when fired (software or a line), not streaming."""
        return self.trigger_source != FREE_RUN

    def genicam_trigger_source(self) -> str:
        """The TriggerSource entry this source is in GenICam's names: Software, Line0, Line1, ..."""
        return "Software" if self.trigger_source == SOFTWARE else "Line" + self.trigger_source[len("line") :]

    def genicam_trigger_activation(self) -> str | None:
        """The TriggerActivation entry (RisingEdge, ...), or None to leave the camera's."""
        if self.trigger_activation is None:
            return None
        return "".join(word.capitalize() for word in self.trigger_activation.split("_"))

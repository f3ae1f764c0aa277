"""The ``[bus]`` section: where and how verdicts and heartbeats are published."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from inspector.config.base import StrictModel

MaskMode = Literal["anomaly_map", "binary", "none"]


class BusConfig(StrictModel):
    """The ZeroMQ PUB socket of the verdict bus."""

    bind: str = Field(
        default="tcp://127.0.0.1:5556",
        description="ZeroMQ endpoint the PUB socket binds (tcp://HOST:PORT, ipc://PATH; port * = any free).",
    )
    sndhwm: int = Field(
        default=100,
        ge=1,
        description="Messages queued per subscriber before ZeroMQ drops for that subscriber (a gap in seq).",
    )
    sndbuf_bytes: int = Field(
        default=65536,
        ge=0,
        le=64 << 20,
        description="Kernel send buffer (SO_SNDBUF) of each subscriber's TCP connection, bytes; with sndhwm "
        "it bounds what a stalled subscriber gets late instead of losing. 0: the OS default (auto-tuned, MBs).",
    )
    linger_ms: int = Field(default=2000, ge=0, description="How long close() waits to flush queued messages.")
    heartbeat_interval_s: float = Field(
        default=1.0, gt=0, le=60, description="Seconds between heartbeat messages."
    )
    max_subscribers: int = Field(
        default=64,
        ge=1,
        le=10_000,
        description="Subscriber connections at once; past it the newest are disconnected (each can hold "
        "sndhwm messages).",
    )
    max_subscription_bytes: int = Field(
        default=16_384,
        ge=1024,
        le=16 << 20,
        description="Bytes of subscriptions one subscriber may send (beyond its handshake and heartbeat pings, "
        "about 200 of the longest topics); past it the subscriber is disconnected and its subscriptions freed.",
    )
    mask: MaskMode = Field(
        default="anomaly_map",
        description="Mask part content: anomaly_map (map scaled to 0..255), binary (0/255 defect mask) or none.",
    )

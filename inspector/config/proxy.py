"""The settings of ``inspector proxy`` (from its command line): the daemons' buses in, one endpoint out."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_HWM = 100_000  # messages buffered per direction and peer before ZeroMQ drops (XPUB) or stops reading
DEFAULT_LINGER_MS = 1000


class ProxyConfig(BaseModel):
    """Where the proxy reads from and where it serves consumers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    frontends: tuple[str, ...] = Field(
        min_length=1, description="Daemon bus endpoints to connect to, e.g. tcp://10.0.0.5:5556."
    )
    backend: str = Field(min_length=1, description="Endpoint bound for consumers, e.g. tcp://0.0.0.0:5550.")
    hwm: int = Field(default=DEFAULT_HWM, ge=1, description="High-water mark of both sockets, in messages.")
    linger_ms: int = Field(default=DEFAULT_LINGER_MS, ge=0, description="Flush time on close, in ms.")

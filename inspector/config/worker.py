"""The ``[worker]`` section: the model worker's gallery, warm-up, stall bound and CPU threads."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from inspector.config.base import StrictModel


class WorkerConfig(StrictModel):
    """The model worker (its device and arithmetic are ``[runtime]`` fields)."""

    gallery: Path | None = Field(
        None, description="Calibrated gallery file for every camera that does not set its own gallery."
    )
    warmup: bool = Field(True, description="Score one blank batch before reporting ready.")
    stall_timeout_s: float = Field(
        30.0,
        ge=1.0,
        le=3600.0,
        description="The worker counts as hung (no systemd WATCHDOG=1, heartbeat worker_alive false) when "
        "one pipeline step takes longer than this many seconds.",
    )
    torch_threads: int = Field(0, ge=0, le=1024, description="CPU threads for PyTorch; 0 keeps its default.")

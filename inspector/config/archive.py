"""The ``[archive]`` section: the defect archive (what is kept, where, for how long, how much)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from inspector.config.base import StrictModel

ARCHIVE_SUBDIR = "archive"  # under $STATE_DIRECTORY when no directory is set


class ArchiveConfig(StrictModel):
    """Evidence of each FAIL, TIMEOUT and ERROR (and a sample of PASS), written atomically to disk."""

    enabled: bool = Field(
        True,
        description="Keep the archive. With no directory it is written only under systemd's StateDirectory "
        "($STATE_DIRECTORY/archive); elsewhere it is off until a directory is set.",
    )
    directory: Path | None = Field(
        None,
        description="Folder of the archive (one subfolder per camera and day); None: $STATE_DIRECTORY/archive.",
    )
    pass_sample_rate: float = Field(
        0.0, ge=0.0, le=1.0, description="Fraction of PASS verdicts archived too (0: none, 1: every one)."
    )
    max_total_mb: float = Field(
        10240.0, gt=0.0, description="Largest total size of the records in MiB; the oldest go first."
    )
    max_age_days: float = Field(30.0, gt=0.0, le=3650.0, description="Records older than this are removed.")
    queue_size: int = Field(
        64,
        ge=1,
        le=4096,
        description="Outcomes waiting to be written; when full, new ones are dropped (counted).",
    )
    flush_timeout_s: float = Field(
        5.0, ge=0.0, le=600.0, description="At stop, seconds allowed to write what is still queued."
    )
    overlay_jpeg_quality: int = Field(90, ge=1, le=100, description="JPEG quality of the heatmap overlay.")

"""The ``[parts]`` section: the parts database (one durable record per inspected part)."""

from __future__ import annotations

import re
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator

from inspector.config.base import StrictModel

PARTS_DB_FILE = "parts.db"  # under $STATE_DIRECTORY when no url is set
PARTS_SPOOL_SUBDIR = (
    "parts-spool"  # under $STATE_DIRECTORY (or beside a SQLite file) when no spool_dir is set
)
SUPPORTED_SCHEMES = ("sqlite", "postgresql+psycopg")
_SHIFT_START = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_PASSWORD_IN_URL = re.compile(r"^[^:/]+://[^/@]*:[^/@]*@")


class PartsConfig(StrictModel):
    """Where every verdict is kept as a record queryable by part id, and for how long."""

    enabled: bool = Field(
        True,
        description="Keep the parts database. With no url it is written only under systemd's StateDirectory "
        "($STATE_DIRECTORY/parts.db); elsewhere it is off until a url is set.",
    )
    url: str | None = Field(
        None,
        description="SQLAlchemy URL: sqlite:////var/lib/inspector/parts.db, or "
        "postgresql+psycopg://USER@HOST:PORT/DB for a plant (the password in password_file, never here).",
    )
    password_file: Path | None = Field(
        None, description="File holding the database password (PostgreSQL); read at start-up, never logged."
    )
    retention_days: float = Field(
        365.0, gt=0.0, le=36_500.0, description="Records older than this are removed (in small batches)."
    )
    queue_size: int = Field(
        4096,
        ge=16,
        le=1_000_000,
        description="Records waiting to be written; when full, new ones are dropped (counted, reason queue_full).",
    )
    flush_interval_ms: float = Field(
        200.0,
        gt=0.0,
        le=10_000.0,
        description="A record is committed (or spooled with fsync) within this of its verdict.",
    )
    batch_size: int = Field(500, ge=1, le=100_000, description="Most records written in one transaction.")
    spool_dir: Path | None = Field(
        None,
        description="Where records wait (JSON lines, fsynced) while the database cannot take them; None: "
        "$STATE_DIRECTORY/parts-spool, or beside the SQLite file.",
    )
    retry_max_s: float = Field(
        30.0, gt=0.0, le=3600.0, description="Longest wait between two attempts to reach the database."
    )
    connect_timeout_s: float = Field(
        5.0, gt=0.0, le=120.0, description="How long one attempt to reach the database may take."
    )
    shifts: list[str] = Field(
        default_factory=lambda: ["06:00", "14:00", "22:00"],
        min_length=1,
        max_length=24,
        description="Local start time (HH:MM) of each shift, for `inspector parts summary --by shift`.",
    )
    timezone: str = Field(
        "UTC", description="IANA time zone of the shifts and of summaries, e.g. Europe/Berlin."
    )

    @field_validator("url")
    @classmethod
    def _url_usable(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme = value.split("://", 1)[0] if "://" in value else ""
        if scheme not in SUPPORTED_SCHEMES:
            raise ValueError(
                f"must start with one of {', '.join(s + '://' for s in SUPPORTED_SCHEMES)}, got "
                f"{scheme + '://' if scheme else 'no scheme'}"
            )
        if _PASSWORD_IN_URL.match(value):
            raise ValueError("must not contain a password: put it in password_file")
        if scheme == "sqlite" and not value.startswith("sqlite:///"):
            raise ValueError("a SQLite url is sqlite:///RELATIVE/PATH or sqlite:////ABSOLUTE/PATH")
        return value

    @field_validator("shifts")
    @classmethod
    def _shifts_valid(cls, value: list[str]) -> list[str]:
        for start in value:
            if not _SHIFT_START.match(start):
                raise ValueError(f"each shift start must be HH:MM (00:00 to 23:59), got {start!r}")
        if len(set(value)) != len(value):
            raise ValueError(f"shift starts must differ, got {value}")
        return sorted(value)

    @field_validator("timezone")
    @classmethod
    def _timezone_known(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as Europe/Berlin)") from None
        return value

"""The parts database's tables (SQLAlchemy Core, one definition for SQLite and PostgreSQL) and its record."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator

NAME_CHARS = 128  # camera, product, part id: longer values are cut (the bus bounds them too)
HASH_CHARS = 64
VERDICT_CHARS = 16
ERROR_CHARS = 2000

metadata = MetaData()


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC on every backend and always read back as an aware UTC ``datetime``."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Aware UTC in; SQLite keeps it as text without the offset."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: give the time zone (the database stores UTC)")
        utc = value.astimezone(UTC)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Aware UTC out."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


ID_TYPE = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER PRIMARY KEY only

parts = Table(
    "parts",
    metadata,
    Column("id", ID_TYPE, primary_key=True, autoincrement=True),
    Column("boot_id", String(HASH_CHARS), nullable=False),
    Column("camera", String(NAME_CHARS), nullable=False),
    Column("seq", BigInteger(), nullable=False),
    Column("part_id", String(NAME_CHARS)),
    Column("product", String(NAME_CHARS)),
    Column("gallery", String(HASH_CHARS)),
    Column("verdict", String(VERDICT_CHARS), nullable=False),
    Column("score", Float()),
    Column("threshold", Float()),
    Column("defect_area_px", Integer()),
    Column("error", Text()),
    Column("captured_at", UtcDateTime(), nullable=False),
    Column("published_at", UtcDateTime(), nullable=False),
    Column("end_to_end_ms", Float()),
    Column("age_ms", Float()),
    Column("archive_record", Text()),
    # the review issue's judgments (null until a person judged the part)
    Column("judgment", String(VERDICT_CHARS)),
    Column("defect_type", String(NAME_CHARS)),
    Column("judged_by", String(NAME_CHARS)),
    Column("judged_at", UtcDateTime()),
    Column("judgment_note", Text()),
    UniqueConstraint("boot_id", "camera", "seq", name="uq_parts_boot_camera_seq"),
    Index("ix_parts_part_id", "part_id"),
    Index("ix_parts_captured_at", "captured_at"),
    Index("ix_parts_camera_captured_at", "camera", "captured_at"),
    Index("ix_parts_verdict_captured_at", "verdict", "captured_at"),
)

audit = Table(
    "audit",
    metadata,
    Column("seq", BigInteger(), primary_key=True, autoincrement=False),
    Column("at", UtcDateTime(), nullable=False),
    Column("action", String(NAME_CHARS), nullable=False),
    Column("user_name", String(NAME_CHARS), nullable=False),
    Column("subject", Text(), nullable=False),
    Column("detail", Text(), nullable=False),
    Column("prev_hash", String(HASH_CHARS), nullable=False),
    Column("hash", String(HASH_CHARS), nullable=False),
)

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer(), primary_key=True),
    Column("applied_at", UtcDateTime(), nullable=False),
    Column("description", Text(), nullable=False),
)


@dataclass(frozen=True)
class PartRecord:
    """One verdict as the database keeps it; field names are the bus header's (``end_to_end_ms`` is its
    ``latency_ms.end_to_end``)."""

    boot_id: str
    camera: str
    seq: int
    verdict: str
    captured_at: datetime
    published_at: datetime
    part_id: str | None = None
    product: str | None = None
    gallery: str | None = None
    score: float | None = None
    threshold: float | None = None
    defect_area_px: int | None = None
    error: str | None = None
    end_to_end_ms: float | None = None
    age_ms: float | None = None
    archive_record: str | None = None

    def row(self) -> dict[str, Any]:
        """The values to insert (text bounded to its column)."""
        values = asdict(self)
        for key, limit in (("part_id", NAME_CHARS), ("product", NAME_CHARS), ("camera", NAME_CHARS),
                           ("error", ERROR_CHARS)):  # fmt: skip
            if isinstance(values[key], str):
                values[key] = values[key][:limit]
        return values

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready document (timestamps as RFC 3339 UTC): the spool's line format."""
        doc = asdict(self)
        for key in ("captured_at", "published_at"):
            doc[key] = doc[key].astimezone(UTC).isoformat().replace("+00:00", "Z")
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> PartRecord:
        """The record of a :meth:`to_json` document.

        Raises:
            KeyError, TypeError, ValueError: not such a document.
        """
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in doc.items() if k in known}
        for key in ("captured_at", "published_at"):
            values[key] = datetime.fromisoformat(str(values[key]))  # 3.11 reads the Z suffix
        return cls(**values)

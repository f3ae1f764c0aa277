"""Operators' judgments of REVIEW and FAIL parts: the queue still to judge, a judgment stored once with its audit
entry, and the judged records a re-teach exports."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, Connection, and_, select, update

from inspector.records.audit import AuditEntry, append
from inspector.records.queries import document
from inspector.records.schema import NAME_CHARS, parts

Judgment = Literal["good", "defect", "unsure"]
JUDGMENTS: tuple[Judgment, ...] = ("good", "defect", "unsure")
QUEUED_VERDICTS = ("REVIEW", "FAIL")
NOTE_CHARS = 2000
DEFAULT_DEFECT_TYPE = "defect"


class JudgmentError(ValueError):
    """A judgment that cannot be stored: unknown record, already judged, not a REVIEW or FAIL, bad value."""


@dataclass(frozen=True)
class Judged:
    """A judgment as stored."""

    record_id: int
    judgment: Judgment
    defect_type: str | None
    user: str
    at: datetime
    note: str


def pending(conn: Connection, limit: int, camera: str | None = None) -> list[dict[str, Any]]:
    """REVIEW and FAIL records nobody judged yet, oldest first."""
    c = parts.c
    where: list[ColumnElement[bool]] = [c.verdict.in_(QUEUED_VERDICTS), c.judgment.is_(None)]
    if camera is not None:
        where.append(c.camera == camera)
    rows = conn.execute(select(parts).where(and_(*where)).order_by(c.id).limit(limit))
    return [document(row) for row in rows]


def judge(
    conn: Connection,
    record_id: int,
    judgment: str,
    user: str,
    note: str = "",
    defect_type: str | None = None,
    at: datetime | None = None,
) -> Judged:
    """Store one judgment and its audit entry in the caller's transaction; a record is judged only once.

    Raises:
        JudgmentError: unknown record, not REVIEW or FAIL, already judged, or an unknown judgment word.
    """
    if judgment not in JUDGMENTS:
        raise JudgmentError(f"judgment {judgment!r} is not one of {list(JUDGMENTS)}")
    at = at or datetime.now(UTC)
    kind = (defect_type or DEFAULT_DEFECT_TYPE)[:NAME_CHARS] if judgment == "defect" else None
    row = conn.execute(select(parts).where(parts.c.id == record_id)).first()
    if row is None:
        raise JudgmentError(f"record {record_id} does not exist")
    if row.verdict not in QUEUED_VERDICTS:
        raise JudgmentError(f"record {record_id} is a {row.verdict}: only REVIEW and FAIL parts are judged")
    done = conn.execute(
        update(parts)
        .where(parts.c.id == record_id, parts.c.judgment.is_(None))
        .values(
            judgment=judgment,
            defect_type=kind,
            judged_by=user[:NAME_CHARS],
            judged_at=at,
            judgment_note=note[:NOTE_CHARS],
        )
    )
    if done.rowcount != 1:
        raise JudgmentError(f"record {record_id} was already judged ({row.judgment} by {row.judged_by})")
    detail = {"record": record_id, "judgment": judgment, "defect_type": kind, "part_id": row.part_id,
              "camera": row.camera, "seq": row.seq, "verdict": row.verdict, "note": note[:NOTE_CHARS]}  # fmt: skip
    append(conn, [AuditEntry("judgment", user, f"{row.camera}/{row.seq}", at, detail)])
    return Judged(record_id, judgment, kind, user, at, note[:NOTE_CHARS])


def judged(conn: Connection, since: datetime | None = None) -> list[dict[str, Any]]:
    """Judged records (good or defect; unsure ones are left out), oldest first, for a re-teach export."""
    c = parts.c
    where: list[ColumnElement[bool]] = [c.judgment.in_(("good", "defect"))]
    if since is not None:
        where.append(c.judged_at >= since)
    return [document(row) for row in conn.execute(select(parts).where(and_(*where)).order_by(c.id))]

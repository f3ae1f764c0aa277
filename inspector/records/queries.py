"""Reading the parts database: records by part id and filters (CLI and HTTP share these), summaries by shift."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Select, and_, select

from inspector.core.names import VERDICTS
from inspector.records.schema import parts

MAX_LIMIT = 10_000
SUMMARY_FETCH_ROWS = 10_000  # rows fetched at a time while counting (bounded memory for a month of parts)
Bucket = Literal["shift", "hour", "day"]


@dataclass(frozen=True)
class PartsFilter:
    """Which records: every given field must match; ``before_id`` pages backwards (ids only grow)."""

    part_id: str | None = None
    camera: str | None = None
    product: str | None = None
    verdict: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    before_id: int | None = None
    limit: int = 100


def _where(f: PartsFilter) -> list[Any]:
    c = parts.c
    conditions: list[Any] = []
    for column, value in ((c.part_id, f.part_id), (c.camera, f.camera), (c.product, f.product),
                          (c.verdict, f.verdict)):  # fmt: skip
        if value is not None:
            conditions.append(column == value)
    if f.since is not None:
        conditions.append(c.captured_at >= f.since)
    if f.until is not None:
        conditions.append(c.captured_at < f.until)
    if f.before_id is not None:
        conditions.append(c.id < f.before_id)
    return conditions


def _rfc3339(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def document(row: Any) -> dict[str, Any]:
    """A record as JSON, with the bus header's field names (``latency_ms.end_to_end`` included)."""
    m = row._mapping
    doc = {
        "id": m["id"], "boot_id": m["boot_id"], "camera": m["camera"], "seq": m["seq"],
        "part_id": m["part_id"], "product": m["product"], "gallery": m["gallery"], "verdict": m["verdict"],
        "score": m["score"], "threshold": m["threshold"], "defect_area_px": m["defect_area_px"],
        "error": m["error"], "captured_at": _rfc3339(m["captured_at"]),
        "published_at": _rfc3339(m["published_at"]), "age_ms": m["age_ms"],
        "latency_ms": {} if m["end_to_end_ms"] is None else {"end_to_end": m["end_to_end_ms"]},
        "archive_record": m["archive_record"],
    }  # fmt: skip
    if m["judgment"] is not None:
        doc["judgment"] = {
            "judgment": m["judgment"], "defect_type": m["defect_type"], "judged_by": m["judged_by"],
            "judged_at": _rfc3339(m["judged_at"]), "note": m["judgment_note"],
        }  # fmt: skip
    return doc


def records_statement(f: PartsFilter) -> Select[Any]:
    """The SELECT of :func:`find_records` (newest first: the latest written, which ``before_id`` pages by)."""
    limit = max(1, min(f.limit, MAX_LIMIT))
    return select(parts).where(and_(*_where(f))).order_by(parts.c.id.desc()).limit(limit)


def find_records(conn: Connection, f: PartsFilter) -> list[dict[str, Any]]:
    """Records matching the filter, newest first, at most ``limit`` (bounded by ``MAX_LIMIT``)."""
    return [document(row) for row in conn.execute(records_statement(f))]


def shift_of(local: datetime, starts: list[str]) -> str:
    """The shift a local time falls in, as ``<date the shift started> <start>`` (a night shift that starts
    at 22:00 owns the small hours of the next day)."""
    minutes = local.hour * 60 + local.minute
    times = sorted(starts)
    own = [s for s in times if int(s[:2]) * 60 + int(s[3:]) <= minutes]
    if own:
        return f"{local.date().isoformat()} {own[-1]}"
    return f"{(local.date() - timedelta(days=1)).isoformat()} {times[-1]}"


def bucket_of(captured: datetime, by: Bucket, zone: ZoneInfo, shifts: list[str]) -> str:
    """The summary bucket of a capture time, in the plant's local time."""
    local = captured.astimezone(zone)
    if by == "hour":
        return local.strftime("%Y-%m-%d %H:00")
    if by == "day":
        return local.date().isoformat()
    return shift_of(local, shifts)


@dataclass
class SummaryRow:
    """Counts of one bucket, product and camera."""

    bucket: str
    product: str
    camera: str
    counts: Counter[str]

    @property
    def total(self) -> int:
        """Every verdict."""
        return sum(self.counts.values())

    def document(self) -> dict[str, Any]:
        """JSON: counts per verdict word, total, and the FAIL, TIMEOUT and ERROR rates."""
        total = self.total
        doc: dict[str, Any] = {"bucket": self.bucket, "product": self.product, "camera": self.camera}
        doc |= {word.lower(): self.counts.get(word, 0) for word in VERDICTS}
        doc["total"] = total
        for word in VERDICTS[1:]:
            doc[f"{word.lower()}_rate"] = round(self.counts.get(word, 0) / total, 6) if total else 0.0
        return doc


def summarise(
    conn: Connection, since: datetime, until: datetime, by: Bucket, zone: ZoneInfo, shifts: list[str]
) -> list[SummaryRow]:
    """Verdict counts per bucket (shift, hour or day, local time), product and camera, oldest bucket first."""
    c = parts.c
    statement = (
        select(c.captured_at, c.product, c.camera, c.verdict)
        .where(c.captured_at >= since, c.captured_at < until)
        .execution_options(yield_per=SUMMARY_FETCH_ROWS)
    )
    rows: dict[tuple[str, str, str], SummaryRow] = {}
    for captured, product, camera, verdict in conn.execute(statement):
        key = (bucket_of(captured, by, zone, shifts), product or "", camera)
        if key not in rows:
            rows[key] = SummaryRow(*key, Counter())
        rows[key].counts[verdict] += 1
    return [rows[k] for k in sorted(rows)]


def parse_time(text: str, zone: ZoneInfo) -> datetime:
    """An ISO date or date-time; without an offset it is the plant's local time (``zone``).

    Raises:
        ValueError: not ISO 8601.
    """
    value = datetime.fromisoformat(text)  # a date alone is its midnight
    return value if value.tzinfo is not None else value.replace(tzinfo=zone)

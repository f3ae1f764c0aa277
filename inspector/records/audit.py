"""The audit trail: an append-only table whose rows each carry the hash of the previous one (a hash chain)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select, text

from inspector.records.schema import audit

GENESIS_HASH = "0" * 64  # the "previous hash" of the first row
AUDIT_LOCK_KEY = 0x1A5_A0D1  # PostgreSQL advisory lock: one appender at a time, so the chain stays a chain
ACTIONS = frozenset({
    "login", "login_failed", "logout", "judgment", "gallery_replaced", "threshold_change", "product_change",
    "reload", "review_export",
})  # fmt: skip


@dataclass(frozen=True)
class AuditEntry:
    """One thing that happened: who did what to what, when, with details (JSON)."""

    action: str
    user: str
    subject: str
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON document (the spool's line format, with ``type`` = ``audit``)."""
        return {"type": "audit", "action": self.action, "user": self.user, "subject": self.subject,
                "at": _rfc3339(self.at), "detail": self.detail}  # fmt: skip

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> AuditEntry:
        """The entry of a :meth:`to_json` document.

        Raises:
            KeyError, TypeError, ValueError: not such a document.
        """
        return cls(str(doc["action"]), str(doc["user"]), str(doc["subject"]),
                   datetime.fromisoformat(str(doc["at"])), dict(doc["detail"]))  # fmt: skip


def _rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def row_hash(previous: str, seq: int, at: datetime, action: str, user: str, subject: str, detail: str) -> str:
    """SHA-256 over the previous row's hash and this row's fields (canonical text, NUL separated)."""
    digest = hashlib.sha256()
    for part in (previous, str(seq), _rfc3339(at), action, user, subject, detail):
        digest.update(part.encode("utf-8") + b"\0")
    return digest.hexdigest()


def append(conn: Connection, entries: Sequence[AuditEntry]) -> None:
    """Append entries at the end of the chain, inside the caller's transaction (serialised across writers)."""
    if not entries:
        return
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": AUDIT_LOCK_KEY})
    last = conn.execute(select(audit.c.seq, audit.c.hash).order_by(audit.c.seq.desc()).limit(1)).first()
    seq, previous = (last.seq, last.hash) if last is not None else (0, GENESIS_HASH)
    rows = []
    for entry in entries:
        seq += 1
        detail = json.dumps(entry.detail, sort_keys=True, separators=(",", ":"))
        digest = row_hash(previous, seq, entry.at, entry.action, entry.user, entry.subject, detail)
        rows.append({"seq": seq, "at": entry.at, "action": entry.action, "user_name": entry.user,
                     "subject": entry.subject, "detail": detail, "prev_hash": previous, "hash": digest})  # fmt: skip
        previous = digest
    conn.execute(audit.insert(), rows)


@dataclass(frozen=True)
class Verification:
    """What ``audit verify`` found: the rows checked and the first one that breaks the chain (None: intact)."""

    rows: int
    first_bad_seq: int | None
    reason: str | None


def verify(conn: Connection) -> Verification:
    """Walk the chain in order; the first row whose hash, link or number does not follow is reported."""
    previous, expected, count = GENESIS_HASH, 1, 0
    for row in conn.execute(select(audit).order_by(audit.c.seq)):
        count += 1
        if row.seq != expected:
            return Verification(count, expected, f"row {expected} is missing (the next row is {row.seq})")
        if row.prev_hash != previous:
            return Verification(count, row.seq, f"row {row.seq} does not link to row {row.seq - 1}")
        digest = row_hash(previous, row.seq, row.at, row.action, row.user_name, row.subject, row.detail)
        if digest != row.hash:
            return Verification(
                count, row.seq, f"row {row.seq} was edited (its hash does not match its fields)"
            )
        previous, expected = row.hash, expected + 1
    return Verification(count, None, None)

"""Tests for inspector.records.audit and judgments on both backends: the hash chain, judged once, the queue."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, delete, text, update

from inspector.config.parts import PartsConfig
from inspector.records.audit import AuditEntry, append, verify
from inspector.records.judgments import JudgmentError, judge, judged, pending
from inspector.records.schema import audit
from inspector.records.store import insert_records, migrate, open_engine
from tests.records.records import T0, record


@pytest.fixture
def engine(parts_db: PartsConfig) -> Iterator[Engine]:
    assert parts_db.url is not None
    engine = open_engine(parts_db, parts_db.url)
    migrate(engine)
    verdicts = ["PASS", "FAIL", "REVIEW", "FAIL", "ERROR"]
    with engine.begin() as conn:
        insert_records(conn, [record(i, verdict=v) for i, v in enumerate(verdicts)])
    try:
        yield engine
    finally:
        engine.dispose()


def _entries(n: int) -> list[AuditEntry]:
    return [AuditEntry("login", f"user{i}", "review page", T0, {"address": "127.0.0.1"}) for i in range(n)]


def test_an_intact_chain_verifies_and_appends_from_two_transactions_link_up(engine: Engine) -> None:
    with engine.begin() as conn:
        append(conn, _entries(3))
    with engine.begin() as conn:
        append(conn, _entries(2))
    with engine.connect() as conn:
        found = verify(conn)
    assert (found.rows, found.first_bad_seq, found.reason) == (5, None, None)


@pytest.mark.parametrize(
    ("tamper", "bad", "reason"),
    [
        (update(audit).where(audit.c.seq == 3).values(user_name="someone else"), 3, "row 3 was edited"),
        (
            update(audit).where(audit.c.seq == 2).values(detail='{"address":"10.0.0.9"}'),
            2,
            "row 2 was edited",
        ),
        (delete(audit).where(audit.c.seq == 2), 2, "row 2 is missing"),
    ],
    ids=["user edited", "detail edited", "row deleted"],
)
def test_an_edited_or_deleted_row_is_the_first_one_reported(
    engine: Engine, tamper: object, bad: int, reason: str
) -> None:
    with engine.begin() as conn:
        append(conn, _entries(4))
    with engine.begin() as conn:
        conn.execute(tamper)  # type: ignore[call-overload]
    with engine.connect() as conn:
        found = verify(conn)
    assert found.first_bad_seq == bad and found.reason is not None and found.reason.startswith(reason)


def test_a_rehashed_row_still_breaks_the_link_of_the_next(engine: Engine) -> None:
    with engine.begin() as conn:
        append(conn, _entries(3))
        conn.execute(text("UPDATE audit SET hash = :h WHERE seq = 2"), {"h": "f" * 64})
    with engine.connect() as conn:
        found = verify(conn)
    assert found.first_bad_seq == 2  # its own hash no longer matches; row 3 would not link either


def test_review_and_fail_parts_are_queued_oldest_first_and_judged_once_with_an_audit_entry(
    engine: Engine,
) -> None:
    with engine.connect() as conn:
        queue = pending(conn, 10)
    assert [(d["seq"], d["verdict"]) for d in queue] == [(1, "FAIL"), (2, "REVIEW"), (3, "FAIL")]
    with engine.begin() as conn:
        first = judge(conn, queue[0]["id"], "good", "op1", note="glare")
        judge(conn, queue[1]["id"], "defect", "op1", defect_type="scratch")
    assert (first.judgment, first.user, first.defect_type) == ("good", "op1", None)
    with engine.begin() as conn, pytest.raises(JudgmentError, match="already judged \\(good by op1\\)"):
        judge(conn, queue[0]["id"], "defect", "op2")
    with engine.begin() as conn, pytest.raises(JudgmentError, match="does not exist"):
        judge(conn, 999_999, "good", "op1")
    with engine.begin() as conn, pytest.raises(JudgmentError, match="is a PASS"):
        judge(conn, queue[0]["id"] - 1, "good", "op1")
    with engine.begin() as conn, pytest.raises(JudgmentError, match="not one of"):
        judge(conn, queue[2]["id"], "maybe", "op1")
    with engine.connect() as conn:
        assert [d["seq"] for d in pending(conn, 10)] == [3]
        done = judged(conn)
        found = verify(conn)
    assert [(d["seq"], d["judgment"]["judgment"], d["judgment"]["defect_type"]) for d in done] == [
        (1, "good", None), (2, "defect", "scratch"),
    ]  # fmt: skip
    assert done[0]["judgment"]["judged_by"] == "op1" and done[0]["judgment"]["note"] == "glare"
    assert (found.rows, found.first_bad_seq) == (2, None)

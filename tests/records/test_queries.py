"""Tests for inspector.records.queries on both backends: records by part id and filters, shift summaries."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine

from inspector.config.parts import PartsConfig
from inspector.records.queries import PartsFilter, find_records, parse_time, shift_of, summarise
from inspector.records.store import insert_records, migrate, open_engine
from tests.records.records import BOOT, T0, record

BERLIN = ZoneInfo("Europe/Berlin")
SHIFTS = ["06:00", "14:00", "22:00"]


@pytest.fixture
def filled(parts_db: PartsConfig) -> Iterator[Engine]:
    """20 records of cam1 (every fifth FAIL), an ERROR of another boot for P-000003, 3 records of cam2."""
    assert parts_db.url is not None
    engine = open_engine(parts_db, parts_db.url)
    migrate(engine)
    rows = [record(i, verdict="FAIL" if i % 5 == 4 else "PASS") for i in range(20)]
    rows += [
        record(0, boot_id="f" * 32, part_id="P-000003", verdict="ERROR", captured_at=T0 + timedelta(hours=1))
    ]
    rows += [record(i, camera="cam2", product="hub") for i in range(3)]
    with engine.begin() as conn:
        insert_records(conn, rows)
    try:
        yield engine
    finally:
        engine.dispose()


def test_a_part_id_gives_every_record_of_it_newest_first_with_the_bus_field_names(filled: Engine) -> None:
    engine = filled
    with engine.connect() as conn:
        found = find_records(conn, PartsFilter(part_id="P-000003"))
    assert [(d["camera"], d["boot_id"], d["verdict"]) for d in found] == [
        ("cam1", "f" * 32, "ERROR"), ("cam1", BOOT, "PASS"),
    ]  # fmt: skip
    doc = found[1]
    assert doc["seq"] == 3 and doc["captured_at"] == "2026-12-07T05:30:03Z"
    assert doc["latency_ms"] == {"end_to_end": 80.0} and doc["product"] == "flange" and "judgment" not in doc
    assert found[0]["error"] == "no frame" and found[0]["score"] is None


def test_filters_combine_and_pages_follow_by_id(filled: Engine) -> None:
    engine = filled
    with engine.connect() as conn:
        fails = find_records(conn, PartsFilter(camera="cam1", verdict="FAIL"))
        window = find_records(conn, PartsFilter(since=T0 + timedelta(seconds=5), until=T0 + timedelta(seconds=8),
                                                camera="cam1"))  # fmt: skip
        first = find_records(conn, PartsFilter(camera="cam1", limit=8))
        second = find_records(conn, PartsFilter(camera="cam1", limit=8, before_id=first[-1]["id"]))
    assert [d["seq"] for d in fails] == [19, 14, 9, 4]
    assert [d["seq"] for d in window] == [7, 6, 5]
    ids = [d["id"] for d in first + second]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 16


def test_summary_counts_verdicts_per_local_shift_product_and_camera(filled: Engine) -> None:
    engine = filled
    since, until = T0 - timedelta(hours=1), T0 + timedelta(hours=2)
    with engine.connect() as conn:
        rows = [r.document() for r in summarise(conn, since, until, "shift", BERLIN, SHIFTS)]
        hours = [r.document() for r in summarise(conn, since, until, "hour", BERLIN, SHIFTS)]
    # 05:30 UTC is 06:30 in Berlin (winter): the morning shift; the ERROR at 06:30 UTC too
    assert [(r["bucket"], r["product"], r["camera"], r["total"], r["fail"], r["error"]) for r in rows] == [
        ("2026-12-07 06:00", "flange", "cam1", 21, 4, 1), ("2026-12-07 06:00", "hub", "cam2", 3, 0, 0),
    ]  # fmt: skip
    assert rows[0]["fail_rate"] == pytest.approx(4 / 21)
    assert [(r["bucket"], r["total"]) for r in hours if r["camera"] == "cam1"] == [
        ("2026-12-07 06:00", 20), ("2026-12-07 07:00", 1),
    ]  # fmt: skip


def test_a_night_shift_owns_the_small_hours_of_the_next_day() -> None:
    assert shift_of(datetime(2026, 12, 8, 3, 0, tzinfo=BERLIN), SHIFTS) == "2026-12-07 22:00"
    assert shift_of(datetime(2026, 12, 8, 22, 0, tzinfo=BERLIN), SHIFTS) == "2026-12-08 22:00"
    assert shift_of(datetime(2026, 12, 8, 13, 59, tzinfo=BERLIN), SHIFTS) == "2026-12-08 06:00"


def test_times_without_an_offset_are_the_plants_local_time() -> None:
    assert parse_time("2026-12-07T06:00", BERLIN) == datetime(2026, 12, 7, 5, 0, tzinfo=UTC)
    assert parse_time("2026-12-07", BERLIN) == datetime(2026, 12, 6, 23, 0, tzinfo=UTC)
    assert parse_time("2026-12-07T06:00Z", BERLIN) == datetime(2026, 12, 7, 6, 0, tzinfo=UTC)
    with pytest.raises(ValueError):
        parse_time("yesterday", BERLIN)

"""Tests for inspector.records.writer on real SQLite and PostgreSQL, with real outages: order, spool, replay."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from inspector.config.parts import PartsConfig
from inspector.records.retention import Retention
from inspector.records.schema import PartRecord, parts
from inspector.records.spool import Spool
from inspector.records.store import insert_records, migrate, open_engine
from inspector.records.writer import PartsWriter
from tests.postgres import PostgresServer
from tests.records.records import T0, record
from tests.support import wait_until


class Events:
    """What the writer reported."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.up: list[bool] = []

    def written(self, count: int, seconds: float) -> None:
        self.counts["written"] += count

    def spooled(self, count: int) -> None:
        self.counts["spooled"] += count

    def replayed(self, count: int) -> None:
        self.counts["replayed"] += count

    def dropped(self, reason: str, count: int) -> None:
        self.counts[f"dropped_{reason}"] += count

    def database_up(self, up: bool) -> None:
        self.up.append(up)


def _rows(config: PartsConfig) -> list[tuple[str, int]]:
    assert config.url is not None
    engine = open_engine(config, config.url)
    try:
        with engine.connect() as conn:
            return [(r.camera, r.seq) for r in conn.execute(select(parts).order_by(parts.c.id))]
    finally:
        engine.dispose()


@contextlib.contextmanager
def _writer(config: PartsConfig, events: Events, spool_dir: Path | None = None) -> Iterator[PartsWriter]:
    assert config.url is not None
    writer = PartsWriter(config, config.url, Spool(spool_dir or config.spool_dir or Path("spool")), events)
    writer.start()
    try:
        yield writer
    finally:
        writer.close(30.0)


@contextlib.contextmanager
def _outage(config: PartsConfig, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PartsConfig]:
    """The database unreachable inside the block and back after it: PostgreSQL stopped and started again;
    a SQLite file whose folder is, for now, a regular file."""
    if config.url is not None and config.url.startswith("postgresql"):
        server: PostgresServer = request.getfixturevalue("postgres")
        server.stop()
        try:
            yield config
        finally:
            server.start()
        return
    blocker = tmp_path / "db"
    blocker.write_text("not yet a folder")
    blocked = config.model_copy(update={"url": f"sqlite:///{blocker / 'parts.db'}"})
    yield blocked
    blocker.unlink()


def test_records_are_committed_in_submission_order_and_a_lone_one_is_not_left_waiting(
    parts_db: PartsConfig,
) -> None:
    events = Events()
    with _writer(parts_db, events) as writer:
        writer.submit(record(0))
        wait_until(lambda: events.counts["written"] == 1, "the lone record committed")
        for seq in range(1, 200):
            writer.submit(record(seq))
        wait_until(lambda: events.counts["written"] == 200, "200 records committed")
        assert writer.degraded_reason is None and writer.depth == 0
    assert _rows(parts_db) == [("cam1", s) for s in range(200)]
    assert events.up[0] is True and events.counts["spooled"] == 0


def test_an_outage_spools_in_order_degrades_with_the_url_and_replays_before_new_records(
    parts_db: PartsConfig, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    events = Events()
    with _outage(parts_db, request, tmp_path) as down:
        writer = PartsWriter(down, str(down.url), Spool(tmp_path / "spool"), events)
        writer.start()
        for seq in range(10):
            writer.submit(record(seq))
        wait_until(lambda: events.counts["spooled"] == 10, "10 records spooled")
        reason = writer.degraded_reason
        assert reason is not None and reason.startswith("parts.url ")
        assert "password" not in reason.lower() and "secret" not in reason
    try:
        wait_until(lambda: events.counts["replayed"] == 10, "the spool replayed once the database is back")
        wait_until(lambda: writer.degraded_reason is None, "healthy again")
        for seq in range(10, 20):
            writer.submit(record(seq))
        wait_until(lambda: events.counts["written"] == 10, "new records written")
    finally:
        writer.close(30.0)
    assert _rows(down) == [("cam1", s) for s in range(20)]
    assert not Spool(tmp_path / "spool").pending and False in events.up and events.up[-1] is True


def test_a_spool_that_cannot_be_written_while_the_database_is_down_counts_every_lost_record(
    parts_db: PartsConfig, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    events = Events()
    blocker = tmp_path / "spool-blocker"
    blocker.write_text("a file where the spool's folder would be")
    with _outage(parts_db, request, tmp_path) as down, _writer(down, events, blocker / "spool") as writer:
        for seq in range(5):
            writer.submit(record(seq))
        wait_until(lambda: events.counts["dropped_spool_failed"] == 5, "5 records counted as lost")
        assert events.counts["spooled"] == 0


def test_a_full_queue_drops_and_counts_instead_of_blocking(parts_db: PartsConfig) -> None:
    events = Events()
    config = parts_db.model_copy(update={"queue_size": 16})
    assert config.url is not None
    writer = PartsWriter(config, config.url, Spool(Path("unused")), events)  # not started: nothing drains
    for seq in range(20):
        writer.submit(record(seq))
    assert events.counts["dropped_queue_full"] == 4 and writer.depth == 16
    writer.close(0.0)
    assert events.counts["dropped_shutdown"] == 16


def test_a_spool_left_by_a_killed_daemon_is_replayed_first_and_a_torn_line_counted(
    parts_db: PartsConfig, tmp_path: Path
) -> None:
    left = Spool(tmp_path / "spool")
    left.append([record(s) for s in range(5)])
    with left.files()[0].open("ab") as handle:
        handle.write(b'{"boot_id":')  # killed mid-line
    events = Events()
    with _writer(parts_db, events, tmp_path / "spool") as writer:
        writer.submit(record(5))
        wait_until(lambda: events.counts["written"] == 1, "the new record written after the replay")
    assert events.counts["replayed"] == 5 and events.counts["dropped_spool_unreadable"] == 1
    assert _rows(parts_db) == [("cam1", s) for s in range(6)]


def test_retention_removes_rows_older_than_the_days_kept_in_batches(
    parts_db: PartsConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inspector.records import retention

    monkeypatch.setattr(retention, "DELETE_BATCH_ROWS", 7)
    assert parts_db.url is not None
    engine = open_engine(parts_db, parts_db.url)
    try:
        migrate(engine)
        old: list[PartRecord] = [record(s, captured_at=T0 - timedelta(days=40)) for s in range(20)]
        with engine.begin() as conn:
            insert_records(conn, [*old, *(record(s) for s in range(20, 25))])
        keep = Retention(parts_db.model_copy(update={"retention_days": 30.0}), lambda: 0.0, lambda: T0)
        assert keep.maybe_run(engine, lambda: True) == 20
        assert keep.maybe_run(engine, lambda: True) == 0  # not due again yet
        with engine.connect() as conn:
            assert [r.seq for r in conn.execute(select(parts.c.seq).order_by(parts.c.seq))] == list(
                range(20, 25)
            )
    finally:
        engine.dispose()
    assert datetime.now(UTC) > T0

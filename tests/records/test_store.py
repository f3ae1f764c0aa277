"""Tests for inspector.records.store and schema on real SQLite and PostgreSQL: migrations, inserts, times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, insert, select

from inspector.config.parts import PartsConfig
from inspector.records.schema import parts, schema_version
from inspector.records.store import (
    LATEST_VERSION,
    PartsConfigError,
    SchemaError,
    display_url,
    insert_records,
    migrate,
    open_engine,
    spool_folder,
)
from tests.records.records import T0, record


def test_migrations_build_the_schema_once_and_a_second_start_changes_nothing(parts_db: PartsConfig) -> None:
    assert parts_db.url is not None
    engine = open_engine(parts_db, parts_db.url)
    try:
        assert migrate(engine) == LATEST_VERSION == migrate(engine)
        with engine.connect() as conn:
            versions = conn.execute(select(schema_version.c.version)).scalars().all()
            assert versions == list(range(1, LATEST_VERSION + 1))
            assert conn.execute(select(func.count()).select_from(parts)).scalar() == 0
    finally:
        engine.dispose()


def test_a_database_of_a_newer_schema_is_refused_naming_both_versions(parts_db: PartsConfig) -> None:
    assert parts_db.url is not None
    engine = open_engine(parts_db, parts_db.url)
    try:
        migrate(engine)
        with engine.begin() as conn:
            conn.execute(insert(schema_version).values(version=99, applied_at=T0, description="future"))
        with pytest.raises(SchemaError, match=f"schema version 99, this build knows up to {LATEST_VERSION}"):
            migrate(engine)
    finally:
        engine.dispose()


def test_a_record_is_stored_once_per_boot_camera_and_seq_and_times_come_back_as_utc(
    parts_db: PartsConfig,
) -> None:
    assert parts_db.url is not None
    engine = open_engine(parts_db, parts_db.url)
    cet = timezone(timedelta(hours=1))
    try:
        migrate(engine)
        first = record(1, captured_at=T0.astimezone(cet))
        with engine.begin() as conn:
            insert_records(conn, [first, record(2)])
        with engine.begin() as conn:
            insert_records(conn, [record(1, verdict="FAIL"), record(3), record(1, camera="cam2")])  # a replay
        with engine.connect() as conn:
            rows = conn.execute(select(parts).order_by(parts.c.id)).all()
        assert [(r.camera, r.seq, r.verdict) for r in rows] == [
            ("cam1", 1, "PASS"), ("cam1", 2, "PASS"), ("cam1", 3, "PASS"), ("cam2", 1, "PASS"),
        ]  # fmt: skip
        assert rows[0].captured_at == T0 and rows[0].captured_at.tzinfo is not None
        assert rows[0].captured_at.utcoffset() == timedelta(0)
    finally:
        engine.dispose()


def test_a_naive_time_is_refused_rather_than_guessed(parts_db: PartsConfig) -> None:
    assert parts_db.url is not None
    engine = open_engine(parts_db, parts_db.url)
    try:
        migrate(engine)
        naive = record(1, captured_at=datetime(2026, 12, 7, 6, 0))
        with pytest.raises(Exception, match="naive datetime"), engine.begin() as conn:
            insert_records(conn, [naive])
    finally:
        engine.dispose()


def test_urls_and_password_files_are_checked_without_printing_a_password(tmp_path: object) -> None:
    with pytest.raises(ValueError, match="must not contain a password"):
        PartsConfig(url="postgresql+psycopg://user:secret@db:5432/parts")
    with pytest.raises(ValueError, match="must start with one of"):
        PartsConfig(url="mysql://db/parts")
    bad = PartsConfig(url="postgresql+psycopg://user@db:notaport/parts")
    with pytest.raises(PartsConfigError, match="parts.url: not a database URL") as info:
        open_engine(bad, str(bad.url))
    assert "notaport" not in str(info.value)
    missing = PartsConfig(url="postgresql+psycopg://user@db:5432/parts", password_file="/nonexistent/pw")
    with pytest.raises(PartsConfigError, match="parts.password_file: .*file not found"):
        open_engine(missing, str(missing.url))
    assert display_url("postgresql+psycopg://u:secret@db/p") == "postgresql+psycopg://u:***@db/p"
    with pytest.raises(PartsConfigError, match="parts.spool_dir: needed"):
        spool_folder(PartsConfig(url="postgresql+psycopg://u@db/p"), {}, "postgresql+psycopg://u@db/p")
    assert datetime.now(UTC).tzinfo is UTC

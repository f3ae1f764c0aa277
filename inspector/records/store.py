"""Opening the parts database: its URL and spool folder from the config, the engine, migrations, batch inserts."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, func, insert, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from inspector.config.parts import PARTS_DB_FILE, PARTS_SPOOL_SUBDIR, PartsConfig
from inspector.core.errors import InspectorError
from inspector.core.keyfiles import KeyFileError, read_key_file
from inspector.core.names import state_directory
from inspector.records.audit import AuditEntry
from inspector.records.audit import append as append_audit
from inspector.records.schema import PartRecord, audit, parts, schema_version

SQLITE_BUSY_TIMEOUT_S = 5.0
MIGRATION_LOCK_KEY = 0x1A5_9EC7  # PostgreSQL advisory lock: line PCs sharing a database migrate one at a time


class PartsConfigError(InspectorError):
    """A ``[parts]`` setting that cannot work (a malformed URL, an unreadable password file); names the field."""


class SchemaError(InspectorError):
    """The database holds a schema this build does not know (newer, or not ours)."""


@dataclass(frozen=True)
class Migration:
    """One forward step of the schema: its version, what it does, and the DDL."""

    version: int
    description: str
    apply: Callable[[Connection], None]


def _v1(conn: Connection) -> None:
    """The first schema: the parts table as defined in :mod:`inspector.records.schema`, with its indexes."""
    parts.create(conn, checkfirst=True)


def _v2(conn: Connection) -> None:
    """The audit trail: an append-only, hash-chained table."""
    audit.create(conn, checkfirst=True)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "parts table with its unique key and indexes", _v1),
    Migration(2, "audit trail (hash chain)", _v2),
)
LATEST_VERSION = MIGRATIONS[-1].version


def database_url(config: PartsConfig, env: Mapping[str, str]) -> str | None:
    """The database: ``url``, else ``sqlite:///$STATE_DIRECTORY/parts.db`` under systemd, else none (off)."""
    if not config.enabled:
        return None
    if config.url is not None:
        return config.url
    state = state_directory(env)
    return f"sqlite:///{Path(state) / PARTS_DB_FILE}" if state else None


def spool_folder(config: PartsConfig, env: Mapping[str, str], url: str) -> Path:
    """Where records wait while the database cannot take them."""
    if config.spool_dir is not None:
        return config.spool_dir
    state = state_directory(env)
    if state:
        return Path(state) / PARTS_SPOOL_SUBDIR
    database = parsed_url(url).database
    if parsed_url(url).get_backend_name() == "sqlite" and database:
        return Path(database).parent / PARTS_SPOOL_SUBDIR
    raise PartsConfigError("parts.spool_dir: needed for a PostgreSQL url outside systemd's StateDirectory")


def parsed_url(url: str) -> URL:
    """The URL as SQLAlchemy reads it.

    Raises:
        PartsConfigError: not a URL SQLAlchemy can read (naming ``parts.url``, never printing a password).
    """
    try:
        return make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise PartsConfigError(f"parts.url: not a database URL ({type(exc).__name__})") from None


def display_url(url: str) -> str:
    """The URL as it may be logged (a password, if any, hidden)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "(unreadable url)"


def connection_url(config: PartsConfig, url: str) -> URL:
    """The URL to connect with: ``url`` read, the password from ``password_file`` added.

    Raises:
        PartsConfigError: a malformed URL or an unreadable password file (naming the field).
    """
    target = parsed_url(url)
    if config.password_file is not None:
        try:
            password = read_key_file(config.password_file, secret=True).decode("utf-8").strip()
        except (KeyFileError, UnicodeDecodeError) as exc:
            raise PartsConfigError(f"parts.password_file: {exc}") from None
        target = target.set(password=password)
    return target


def open_engine(config: PartsConfig, url: str, create_folder: bool = True) -> Engine:
    """An engine for the database (nothing is connected yet); a SQLite file's folder is created (unless
    ``create_folder`` is False: readers), and the file gets WAL journaling.

    Raises:
        PartsConfigError: a malformed URL or an unreadable password file (naming the field).
        OSError: the SQLite file's folder cannot be created.
    """
    target = connection_url(config, url)
    backend = target.get_backend_name()
    if backend == "sqlite":
        if target.database and create_folder:
            Path(target.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(target, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    timeout = max(1, math.ceil(config.connect_timeout_s))
    return create_engine(target, pool_pre_ping=True, connect_args={"connect_timeout": timeout})


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer, a crash loses no commit
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable at each checkpoint, safe with WAL
    cursor.execute("PRAGMA auto_vacuum=INCREMENTAL")  # takes effect on a new file: space returned in steps
    cursor.close()


def migrate(engine: Engine, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> int:
    """Apply the migrations the database has not had, in order, each in its own transaction.

    Returns:
        The schema version now.

    Raises:
        SchemaError: the database's schema is newer than this build's.
        sqlalchemy.exc.SQLAlchemyError: the database cannot be reached or refuses (the caller retries).
    """
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        schema_version.create(conn, checkfirst=True)
        current = conn.execute(select(func.max(schema_version.c.version))).scalar() or 0
        if current > LATEST_VERSION:
            raise SchemaError(
                f"the parts database is at schema version {current}, this build knows up to {LATEST_VERSION}: "
                "upgrade inspector (or point parts.url elsewhere)"
            )
        for step in MIGRATIONS[current:]:
            step.apply(conn)
            conn.execute(
                insert(schema_version).values(
                    version=step.version, applied_at=clock(), description=step.description
                )
            )
    return LATEST_VERSION


def insert_entries(conn: Connection, entries: Sequence[PartRecord | AuditEntry]) -> None:
    """Insert part records and append audit entries, in the caller's transaction."""
    insert_records(conn, [e for e in entries if isinstance(e, PartRecord)])
    append_audit(conn, [e for e in entries if isinstance(e, AuditEntry)])


def insert_records(conn: Connection, records: Sequence[PartRecord]) -> None:
    """Insert records in one statement; a record already there (same boot, camera, seq) is left as it is."""
    if not records:
        return
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(parts).on_conflict_do_nothing(index_elements=["boot_id", "camera", "seq"])
    conn.execute(statement, [r.row() for r in records])

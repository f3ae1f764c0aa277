"""Retention of the parts database: old rows removed in small batches, SQLite space returned on a schedule."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, delete, select, text

from inspector.config.parts import PartsConfig
from inspector.records.schema import parts

RETENTION_INTERVAL_S = 600.0  # how often old rows are looked for
DELETE_BATCH_ROWS = 1000  # rows removed per transaction: short locks, the writer goes on between batches
SQLITE_VACUUM_PAGES = 2000  # pages returned per incremental vacuum
SECONDS_PER_DAY = 86_400.0


class Retention:
    """Removes rows older than ``retention_days``; run by the writer thread when it has nothing to write."""

    def __init__(
        self,
        config: PartsConfig,
        clock: Callable[[], float],
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """Prepare (the first pass runs at the first :meth:`maybe_run`)."""
        self._days = config.retention_days
        self._clock = clock
        self._wall = wall
        self._next = 0.0
        self.removed = 0

    def maybe_run(self, engine: Engine, idle: Callable[[], bool]) -> int:
        """When due, remove old rows batch by batch while ``idle()`` says nothing waits; returns rows removed."""
        if self._clock() < self._next:
            return 0
        self._next = self._clock() + RETENTION_INTERVAL_S
        cutoff = self._wall() - timedelta(seconds=self._days * SECONDS_PER_DAY)
        removed = 0
        while idle():
            with engine.begin() as conn:
                ids = select(parts.c.id).where(parts.c.captured_at < cutoff).limit(DELETE_BATCH_ROWS)
                count = conn.execute(delete(parts).where(parts.c.id.in_(ids))).rowcount
            removed += count
            if count < DELETE_BATCH_ROWS:
                break
        if removed and engine.dialect.name == "sqlite":  # PostgreSQL leaves it to autovacuum
            with engine.connect() as conn:
                conn.execute(text(f"PRAGMA incremental_vacuum({SQLITE_VACUUM_PAGES})"))
                conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
        self.removed += removed
        return removed

"""The parts writer: a thread that commits records in batches, spools them while the database cannot take them,
and replays the spool in order when it can again."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from inspector.config.parts import PartsConfig
from inspector.records.retention import Retention
from inspector.records.spool import Entry, Spool
from inspector.records.store import SchemaError, display_url, insert_entries, migrate, open_engine

IDLE_WAIT_S = 0.5  # longest wait for a record while nothing arrives (retries and retention run between)
COLLECT_SHARE = 0.5  # of flush_interval spent gathering a batch; the rest is for writing it
RETRY_MIN_S = 0.5
DROP_QUEUE_FULL = "queue_full"
DROP_SPOOL_FAILED = "spool_failed"
DROP_SPOOL_UNREADABLE = "spool_unreadable"
DROP_SHUTDOWN = "shutdown"
DROP_INVALID = "invalid"
ERROR_TEXT_CHARS = 300


class WriterEvents(Protocol):
    """What the writer reports (the daemon turns it into metrics)."""

    def written(self, count: int, seconds: float) -> None:
        """``count`` records committed in one transaction that took ``seconds``."""

    def spooled(self, count: int) -> None:
        """``count`` records appended to the spool."""

    def replayed(self, count: int) -> None:
        """``count`` spooled records committed."""

    def dropped(self, reason: str, count: int) -> None:
        """``count`` records lost, and why."""

    def database_up(self, up: bool) -> None:
        """The database took (True) or refused (False) the last attempt."""


class PartsWriter:
    """Owns the database connection and the spool; :meth:`submit` never blocks.

    Records are committed in the order they were submitted: while the spool holds anything, new records go
    to the spool behind it, and the spool is replayed file by file (oldest first) before the writer returns
    to the database. A record is committed or spooled within ``flush_interval_ms`` of its submission unless
    the database itself is slower than that (a write in progress cannot be cut short).
    """

    def __init__(
        self,
        config: PartsConfig,
        url: str,
        spool: Spool,
        events: WriterEvents,
        engine_factory: Callable[[PartsConfig, str], Engine] = open_engine,
        clock: Callable[[], float] = time.monotonic,
        convert: Callable[[Any], Entry] | None = None,
    ) -> None:
        """Prepare the writer (nothing is connected until :meth:`start`).

        Args:
            config: the ``[parts]`` section.
            url: the database URL (:func:`inspector.records.store.database_url`).
            spool: where records wait while the database cannot take them.
            events: what the writer reports (metrics).
            engine_factory: makes the engine (tests inject a failing one).
            clock: monotonic seconds.
            convert: turns a submitted item into a record on the writer's thread (default: items are records),
                so that the caller's thread only queues.
        """
        self.config = config
        self.url = url
        self.spool = spool
        self._events = events
        self._engine_factory = engine_factory
        self._clock = clock
        self._convert: Callable[[Any], Entry] = convert or (lambda item: item)
        self._queue: queue.Queue[tuple[float, Any]] = queue.Queue(maxsize=config.queue_size)
        self._engine: Engine | None = None
        self._healthy = False
        self._reason: str | None = "not connected yet"
        self._next_retry = 0.0
        self._backoff = RETRY_MIN_S
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._retention = Retention(config, clock)
        self._log = structlog.stdlib.get_logger(__name__).bind(url=display_url(url))

    @property
    def depth(self) -> int:
        """Records waiting in memory."""
        return self._queue.qsize()

    @property
    def degraded_reason(self) -> str | None:
        """Why records are not reaching the database now (None when they are)."""
        return self._reason

    def submit(self, record: Any) -> None:
        """Queue a record (or an item ``convert`` turns into one); when the queue is full it is dropped and
        counted."""
        if self._stopping.is_set():
            self._events.dropped(DROP_SHUTDOWN, 1)
            return
        try:
            self._queue.put_nowait((self._clock(), record))
        except queue.Full:
            self._events.dropped(DROP_QUEUE_FULL, 1)

    def start(self) -> None:
        """Start the writer thread (it connects, migrates and replays the spool first)."""
        self._thread = threading.Thread(target=self._run, name="parts-writer", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float) -> None:
        """Write what is queued (to the database, else the spool) within ``timeout_s``; count what is left."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        left = 0
        while True:
            try:
                self._queue.get_nowait()
                left += 1
            except queue.Empty:
                break
        if left:
            self._events.dropped(DROP_SHUTDOWN, left)
        if self._engine is not None and (self._thread is None or not self._thread.is_alive()):
            self._engine.dispose()

    # ------------------------------------------------------------------------------------------ thread

    def _run(self) -> None:
        self._recover()
        while True:
            batch = self._collect()
            if batch:
                self._write(batch)
            elif self._stopping.is_set() and self._queue.empty():
                return
            if (not self._healthy or self.spool.pending) and self._clock() >= self._next_retry:
                self._recover()
            if self._healthy and self._engine is not None and self._queue.empty():
                self._retention.maybe_run(self._engine, self._queue.empty)

    def _collect(self) -> list[Entry]:
        """The next batch: records that arrived within part of the flush interval of the first, at most
        ``batch_size``; empty when none arrived for ``IDLE_WAIT_S``."""
        try:
            first_at, first = self._queue.get(timeout=0.0 if self._stopping.is_set() else IDLE_WAIT_S)
        except queue.Empty:
            return []
        items = [first]
        deadline = first_at + self.config.flush_interval_ms / 1000.0 * COLLECT_SHARE
        while len(items) < self.config.batch_size:
            wait = deadline - self._clock()
            try:
                items.append((self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait())[1])
            except queue.Empty:
                break
        batch: list[Entry] = []
        for item in items:
            try:
                batch.append(self._convert(item))
            except (ValueError, KeyError, TypeError) as exc:
                self._events.dropped(DROP_INVALID, 1)
                self._log.error("parts_record_invalid", error=repr(exc)[:ERROR_TEXT_CHARS])
        return batch

    def _write(self, batch: list[Entry]) -> None:
        if not self._healthy or self.spool.pending or self._engine is None:
            self._spool(batch)
            return
        started = self._clock()
        try:
            with self._engine.begin() as conn:
                insert_entries(conn, batch)
        except SQLAlchemyError as exc:
            self._fail(exc)
            self._spool(batch)
            return
        self._events.written(len(batch), self._clock() - started)

    def _spool(self, batch: list[Entry]) -> None:
        try:
            self.spool.append(batch)
        except OSError as exc:
            self._events.dropped(DROP_SPOOL_FAILED, len(batch))
            self._log.error(
                "parts_spool_failed", folder=str(self.spool.folder), error=str(exc), records=len(batch)
            )
            return
        self._events.spooled(len(batch))

    def _fail(self, exc: BaseException) -> None:
        """Mark the database unusable for now and schedule the next attempt (exponential backoff)."""
        reason = f"parts.url {display_url(self.url)}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        reason = reason[:ERROR_TEXT_CHARS]
        if self._healthy or self._reason != reason:
            self._log.error("parts_database_unavailable", error=reason, retry_in_s=round(self._backoff, 1))
        self._healthy, self._reason = False, reason
        self._events.database_up(False)
        self._next_retry = self._clock() + self._backoff
        self._backoff = min(self._backoff * 2, self.config.retry_max_s)

    def _recover(self) -> None:
        """Connect (and migrate) if needed, replay the spool oldest first; healthy once it is empty."""
        try:
            if self._engine is None:
                self._engine = self._engine_factory(self.config, self.url)
            migrate(self._engine)
            for path in self.spool.files():
                self._replay(path)
        except (SQLAlchemyError, SchemaError, OSError) as exc:
            self._fail(exc)
            return
        if not self._healthy:
            self._log.info("parts_database_ready")
        self._healthy, self._reason, self._backoff = True, None, RETRY_MIN_S
        self._events.database_up(True)

    def _replay(self, path: Path) -> None:
        assert self._engine is not None
        spooled = self.spool.read(path)
        if spooled.unreadable:
            self._events.dropped(DROP_SPOOL_UNREADABLE, spooled.unreadable)
            self._log.warning(
                "parts_spool_lines_unreadable", file=str(spooled.path), lines=spooled.unreadable
            )
        size = self.config.batch_size
        for start in range(0, len(spooled.records), size):
            with self._engine.begin() as conn:
                insert_entries(conn, spooled.records[start : start + size])
        self.spool.remove(spooled.path)
        self._events.replayed(len(spooled.records))

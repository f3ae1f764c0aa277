"""The defect archive: the evidence of each FAIL, TIMEOUT and ERROR (and a sample of PASS) on disk.

Layout: ``<root>/<camera>/<YYYY-MM-DD>/<HHMMSS.ffffff>_<seq>_<verdict>_<boot_id>/`` (UTC capture time), each
record a folder of ``header.json`` (the verdict header exactly as published), ``evidence.json``
(:class:`~inspector.outputs.evidence.Evidence`) and the images. A record is written into a ``.tmp-`` folder,
synced, then renamed into place, so a crash never leaves a half record under a record's name (a left-over
``.tmp-`` folder is removed at the next start). Retention removes the oldest records first, by total size
and by age. A write that fails (disk full, read-only, permissions) is skipped, counted and logged; it never
reaches the pipeline.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog

from inspector.bus.wire import parse_rfc3339
from inspector.config.archive import ArchiveConfig
from inspector.core.records import Outcome
from inspector.ops.logs import LogThrottle, frame_logger
from inspector.ops.output_metrics import (
    ARCHIVE_DISK_FULL,
    ARCHIVE_IO_ERROR,
    ARCHIVE_PERMISSION,
    ARCHIVE_READ_ONLY,
    ARCHIVE_REMOVED_AGE,
    ARCHIVE_REMOVED_SIZE,
    OutputMetrics,
)
from inspector.outputs.evidence import (
    EVIDENCE_FILE,
    HEADER_FILE,
    EvidenceError,
    evidence_of,
    images_of,
    published_header,
    render,
)

MIB = 1 << 20
S_PER_DAY = 86400.0
TMP_PREFIX = ".tmp-"
DAY_FORMAT = "%Y-%m-%d"
TIME_FORMAT = "%H%M%S.%f"
RECORD_NAME = re.compile(r"^(\d{6}\.\d{6})_(\d+)_(PASS|FAIL|TIMEOUT|ERROR)_([0-9a-f]{32})$")
DAY_NAME = re.compile(r"^\d{4}-\d{2}-\d{2}$")
ALWAYS_ARCHIVED = frozenset({"REVIEW", "FAIL", "TIMEOUT", "ERROR"})
SKIP_LOG_INTERVAL_S = 60.0  # one log line per skip reason per minute while the trouble lasts
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
PERMISSION_ERRNOS = frozenset({errno.EACCES, errno.EPERM})
PASS_CREDIT_EPS = 1e-9  # so that ten steps of 0.1 make a whole PASS despite rounding


@dataclass(frozen=True)
class ArchivedRecord:
    """One record in the archive's index."""

    path: Path
    camera: str
    seq: int
    boot_id: str
    verdict: str
    captured_at: float
    size_bytes: int


def skip_reason(exc: OSError) -> str:
    """The counted reason for a failed write: disk_full, read_only, permission_denied or io_error."""
    if exc.errno in DISK_FULL_ERRNOS:
        return ARCHIVE_DISK_FULL
    if exc.errno == errno.EROFS:
        return ARCHIVE_READ_ONLY
    if exc.errno in PERMISSION_ERRNOS:
        return ARCHIVE_PERMISSION
    return ARCHIVE_IO_ERROR


def record_name(captured_at: float, seq: int, verdict: str, boot_id: str) -> tuple[str, str]:
    """(day folder, record folder) names of a record, from its UTC capture time."""
    when = datetime.fromtimestamp(captured_at, tz=UTC)
    return when.strftime(DAY_FORMAT), f"{when.strftime(TIME_FORMAT)}_{seq:08d}_{verdict}_{boot_id}"


def parse_record_path(path: Path) -> ArchivedRecord | None:
    """The index entry of a record folder ``<camera>/<day>/<name>`` (None when the name is not a record's)."""
    match = RECORD_NAME.match(path.name)
    if match is None or not DAY_NAME.match(path.parent.name):
        return None
    when = datetime.strptime(f"{path.parent.name} {match.group(1)}", f"{DAY_FORMAT} {TIME_FORMAT}")
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    return ArchivedRecord(
        path=path,
        camera=path.parent.parent.name,
        seq=int(match.group(2)),
        boot_id=match.group(4),
        verdict=match.group(3),
        captured_at=when.replace(tzinfo=UTC).timestamp(),
        size_bytes=size,
    )


def _write_synced(path: Path, data: bytes) -> None:
    with path.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DefectArchive:
    """The archive folder and its in-memory index (oldest first); safe to read from other threads.

    The archive's own thread calls :meth:`write` and :meth:`enforce_retention`; the results endpoint calls
    :meth:`find`, :meth:`latest` and :meth:`read` from its thread.
    """

    def __init__(
        self,
        root: Path,
        config: ArchiveConfig,
        metrics: OutputMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Prepare an archive at ``root``; :meth:`open` reads what is already there.

        Args:
            root: the archive folder.
            config: the ``[archive]`` section.
            metrics: where records, skips and removals are counted.
            clock: Unix time, for the age limit.
        """
        self.root = root
        self._config = config
        self._metrics = metrics
        self._clock = clock
        self._max_bytes = int(config.max_total_mb * MIB)
        self._max_age_s = config.max_age_days * S_PER_DAY
        self._lock = threading.Lock()
        self._records: deque[ArchivedRecord] = deque()
        self._by_key: dict[tuple[str, str, int], ArchivedRecord] = {}
        self._bytes = 0
        self._pass_credit: dict[str, float] = {}
        self._throttle = LogThrottle(SKIP_LOG_INTERVAL_S)
        self._log = structlog.stdlib.get_logger(__name__).bind(archive=str(root))

    @property
    def total_bytes(self) -> int:
        """Bytes held by the indexed records."""
        with self._lock:
            return self._bytes

    def records(self) -> list[ArchivedRecord]:
        """Every indexed record, oldest first."""
        with self._lock:
            return list(self._records)

    def open(self) -> None:
        """Create the folder, remove half-written records of a crash, index what is there, apply retention.

        Never raises: an archive that cannot be read (read-only, missing permissions) is logged and starts
        empty; its writes are then skipped and counted.
        """
        found: list[ArchivedRecord] = []
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            found = self._scan()
        except OSError as exc:
            self._log.warning("archive_unusable", error=str(exc), reason=skip_reason(exc))
        found.sort(key=lambda r: (r.captured_at, r.path.name))
        with self._lock:
            for record in found:
                self._add(record)
        self._log.info("archive_opened", records=len(found), bytes=self.total_bytes)
        self.enforce_retention()

    def _scan(self) -> list[ArchivedRecord]:
        found = []
        for day_dir in sorted(d for cam in self.root.iterdir() if cam.is_dir() for d in cam.iterdir()):
            if not (day_dir.is_dir() and DAY_NAME.match(day_dir.name)):
                continue
            for entry in sorted(day_dir.iterdir()):
                if entry.name.startswith(TMP_PREFIX):
                    self._log.warning("archive_incomplete_record_removed", path=str(entry))
                    shutil.rmtree(entry, ignore_errors=True)
                elif entry.is_dir() and (record := parse_record_path(entry)) is not None:
                    found.append(record)
        return found

    def wants(self, outcome: Outcome) -> bool:
        """FAIL, TIMEOUT and ERROR always; PASS at ``pass_sample_rate`` (every 1/rate-th, per camera)."""
        if outcome.verdict in ALWAYS_ARCHIVED:
            return True
        rate = self._config.pass_sample_rate
        if rate <= 0.0:
            return False
        credit = self._pass_credit.get(outcome.camera, 1.0 - rate) + rate
        due = credit >= 1.0 - PASS_CREDIT_EPS
        self._pass_credit[outcome.camera] = credit - 1.0 if due else credit
        return due

    def write(self, outcome: Outcome) -> ArchivedRecord | None:
        """Write one record atomically, then apply retention; a failed write is skipped and counted."""
        try:
            record = self._write_record(outcome)
        except (OSError, EvidenceError) as exc:
            reason = skip_reason(exc) if isinstance(exc, OSError) else ARCHIVE_IO_ERROR
            self._skipped(outcome, reason, exc)
            return None
        with self._lock:
            self._add(record)
        if self._metrics is not None:
            self._metrics.archive_records.labels(camera=record.camera, verdict=record.verdict).inc()
        self.enforce_retention()
        return record

    def _write_record(self, outcome: Outcome) -> ArchivedRecord:
        header = published_header(outcome)
        captured_at = parse_rfc3339(header.captured_at)
        day, name = record_name(captured_at, header.seq, header.verdict, header.boot_id)
        files = {
            HEADER_FILE: header.model_dump_json().encode("utf-8"),
            EVIDENCE_FILE: evidence_of(outcome, header).model_dump_json(indent=2).encode("utf-8"),
        }
        for image in images_of(outcome):
            files[image] = render(outcome, image, self._config.overlay_jpeg_quality)
        day_dir = self.root / header.camera / day
        day_dir.mkdir(parents=True, exist_ok=True)
        tmp = day_dir / f"{TMP_PREFIX}{name}"
        try:
            tmp.mkdir()
            for file_name, data in files.items():
                _write_synced(tmp / file_name, data)
            _sync_dir(tmp)
            tmp.rename(day_dir / name)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _sync_dir(day_dir)
        size = sum(len(d) for d in files.values())
        return ArchivedRecord(
            day_dir / name, header.camera, header.seq, header.boot_id, header.verdict, captured_at, size
        )

    def _skipped(self, outcome: Outcome, reason: str, exc: Exception) -> None:
        if self._metrics is not None:
            self._metrics.archive_skipped.labels(camera=outcome.camera, reason=reason).inc()
        held = self._throttle.allow(reason)
        if held is not None:
            frame_logger(self._log, outcome.camera, outcome.seq).warning(
                "archive_write_skipped", reason=reason, error=str(exc), similar_lines_held_back=held
            )

    def enforce_retention(self) -> None:
        """Remove the oldest records while the archive is over its size limit, and every record too old."""
        too_old = self._clock() - self._max_age_s
        while True:
            with self._lock:
                oldest = self._records[0] if self._records else None
                over_size = self._bytes > self._max_bytes
            if oldest is None:
                break
            if over_size:
                reason = ARCHIVE_REMOVED_SIZE
            elif oldest.captured_at < too_old:
                reason = ARCHIVE_REMOVED_AGE
            else:
                break
            if not self._remove(oldest, reason):
                break
        self._update_gauges()

    def _remove(self, record: ArchivedRecord, reason: str) -> bool:
        try:
            shutil.rmtree(record.path)
        except FileNotFoundError:
            pass  # removed by hand: forget it
        except OSError as exc:
            held = self._throttle.allow(f"remove:{skip_reason(exc)}")
            if held is not None:
                self._log.warning("archive_remove_failed", path=str(record.path), error=str(exc))
            return False
        with self._lock:
            self._records.popleft()
            self._by_key.pop((record.camera, record.boot_id, record.seq), None)
            self._bytes -= record.size_bytes
        if self._metrics is not None:
            self._metrics.archive_removed.labels(reason=reason).inc()
        for folder in (record.path.parent, record.path.parent.parent):
            try:
                folder.rmdir()  # only when empty
            except OSError:
                break
        return True

    def _add(self, record: ArchivedRecord) -> None:
        """Index a record (caller holds the lock)."""
        self._records.append(record)
        self._by_key[(record.camera, record.boot_id, record.seq)] = record
        self._bytes += record.size_bytes

    def _update_gauges(self) -> None:
        if self._metrics is not None:
            with self._lock:
                count, size = len(self._records), self._bytes
            self._metrics.archive_held.set(count)
            self._metrics.archive_bytes.set(size)

    def find(self, camera: str, seq: int, boot_id: str) -> ArchivedRecord | None:
        """The record of one verdict of one daemon run, if the archive holds it."""
        with self._lock:
            return self._by_key.get((camera, boot_id, seq))

    def latest(self, camera: str, boot_id: str | None = None) -> ArchivedRecord | None:
        """The newest record of a camera (of the daemon run ``boot_id`` when given)."""
        with self._lock:
            return next(
                (
                    r
                    for r in reversed(self._records)
                    if r.camera == camera and (boot_id is None or r.boot_id == boot_id)
                ),
                None,
            )

    @staticmethod
    def read(record: ArchivedRecord, file_name: str) -> bytes:
        """One file of a record.

        Raises:
            FileNotFoundError: the record or the file is gone (retention, or it never had that image).
        """
        return (record.path / file_name).read_bytes()

"""The spool: records the database could not take, as append-only JSON lines fsynced per batch, in order."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from inspector.records.audit import AuditEntry
from inspector.records.schema import PartRecord

Entry = PartRecord | AuditEntry  # what the writer stores: a part's record, or an audit trail entry

SPOOL_PREFIX = "spool-"
SPOOL_SUFFIX = ".jsonl"
MAX_RECORDS_PER_FILE = 10_000  # a replayed file is removed whole: bounded, so a replay makes steady progress
NAME_DIGITS = 12


@dataclass(frozen=True)
class SpoolFile:
    """The records of one spool file, and the lines that could not be read (a torn last line after a crash)."""

    path: Path
    records: list[Entry]
    unreadable: int


class Spool:
    """Records in files ``spool-000000000001.jsonl``, ``...2``; replayed oldest first.

    Not thread-safe: one writer thread owns it.
    """

    def __init__(self, folder: Path) -> None:
        """Use ``folder`` (created on the first append)."""
        self.folder = folder
        self._current: Path | None = None
        self._current_lines = 0

    def files(self) -> list[Path]:
        """Spool files, oldest first."""
        if not self.folder.is_dir():
            return []
        return sorted(
            p for p in self.folder.iterdir() if p.name.startswith(SPOOL_PREFIX) and p.suffix == SPOOL_SUFFIX
        )

    @property
    def pending(self) -> bool:
        """True while any spooled record waits for the database."""
        return bool(self.files())

    def append(self, records: Sequence[Entry]) -> None:
        """Append records and fsync them (and, for a new file, its folder).

        Raises:
            OSError: the spool cannot be written (full or read-only disk, permissions).
        """
        if not records:
            return
        if self._current is None or self._current_lines >= MAX_RECORDS_PER_FILE or not self._current.exists():
            self._current, self._current_lines = self._new_file(), 0
        data = "".join(json.dumps(r.to_json(), separators=(",", ":")) + "\n" for r in records).encode("utf-8")
        with open(self._current, "ab") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        self._current_lines += len(records)

    def _new_file(self) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        existing = self.files()
        last = int(existing[-1].stem.removeprefix(SPOOL_PREFIX)) if existing else 0
        path = self.folder / f"{SPOOL_PREFIX}{last + 1:0{NAME_DIGITS}d}{SPOOL_SUFFIX}"
        path.touch()
        dir_fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return path

    def read(self, path: Path) -> SpoolFile:
        """The records of one file, in order; lines that do not parse are counted, not returned."""
        records: list[Entry] = []
        unreadable = 0
        for line in path.read_bytes().splitlines():
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
                records.append(
                    AuditEntry.from_json(doc) if doc.get("type") == "audit" else PartRecord.from_json(doc)
                )
            except (ValueError, TypeError, KeyError, UnicodeDecodeError):
                unreadable += 1
        return SpoolFile(path, records, unreadable)

    def remove(self, path: Path) -> None:
        """Remove a file whose records are all in the database."""
        if path == self._current:
            self._current = None
        path.unlink(missing_ok=True)

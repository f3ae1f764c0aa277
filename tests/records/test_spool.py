"""Tests for inspector.records.spool: append-only JSON lines, replayed in order, a torn line counted."""

from __future__ import annotations

from pathlib import Path

import pytest

from inspector.records import spool as spool_module
from inspector.records.audit import AuditEntry
from inspector.records.spool import Spool
from tests.records.records import T0, record


def test_records_come_back_in_order_across_files_with_every_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "MAX_RECORDS_PER_FILE", 3)
    spool = Spool(tmp_path / "spool")
    assert not spool.pending and spool.files() == []
    written = [record(i, verdict="ERROR" if i == 4 else "PASS") for i in range(7)]
    spool.append(written[:2])
    spool.append(written[2:5])  # the first file holds 5 now: full, the next append opens a new one
    spool.append(written[5:])
    files = spool.files()
    assert [p.name for p in files] == ["spool-000000000001.jsonl", "spool-000000000002.jsonl"]
    read = [r for p in files for r in spool.read(p).records]
    assert read == written
    spool.remove(files[0])
    assert spool.files() == files[1:] and spool.pending


def test_a_torn_last_line_is_counted_and_the_rest_read(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([record(1), record(2)])
    (path,) = spool.files()
    with path.open("ab") as handle:
        handle.write(b'{"boot_id": "0123", "cam')  # the daemon died while writing
    result = spool.read(path)
    assert [getattr(r, "seq", None) for r in result.records] == [1, 2] and result.unreadable == 1


def test_a_spool_that_cannot_be_written_raises_for_the_caller_to_count(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError):
        Spool(blocker / "spool").append([record(1)])


def test_audit_entries_and_records_share_the_spool_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    entry = AuditEntry("product_change", "daemon", "cam1", T0, {"from": "a", "to": "b"})
    spool.append([record(1), entry, record(2)])
    assert spool.read(spool.files()[0]).records == [record(1), entry, record(2)]

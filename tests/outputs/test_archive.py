"""Tests for inspector.outputs.archive: complete atomic records, retention by size and age, skipped writes."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from inspector.bus.wire import VerdictHeader
from inspector.config.archive import ArchiveConfig
from inspector.core.records import Outcome
from inspector.model.maps import crop_to_frame
from inspector.ops.output_metrics import OutputMetrics
from inspector.outputs.archive import TMP_PREFIX, DefectArchive, skip_reason
from inspector.outputs.evidence import Evidence
from tests.support import ScoredLine, read_png

MIB = 1 << 20
DAY_S = 86400.0


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def fails(line: ScoredLine) -> list[Outcome]:
    found = [o for o in line.outcomes if o.verdict == "FAIL"]
    assert len(found) == 2, [o.verdict for o in line.outcomes]
    return found


def open_archive(root: Path, registry: CollectorRegistry | None = None, **config: float) -> DefectArchive:
    metrics = OutputMetrics(registry) if registry is not None else None
    archive = DefectArchive(root, ArchiveConfig.model_validate(config), metrics)
    archive.open()
    return archive


def assert_complete(folder: Path, outcome: Outcome) -> None:
    """Every file of a record is there and parses, and says what the outcome says."""
    header = VerdictHeader.model_validate_json((folder / "header.json").read_bytes())
    assert (folder / "header.json").read_text(encoding="utf-8") == outcome.published
    evidence = Evidence.model_validate_json((folder / "evidence.json").read_bytes())
    assert (evidence.camera, evidence.seq, evidence.verdict) == (header.camera, header.seq, header.verdict)
    assert evidence.neighbours == list(outcome.neighbours) and evidence.neighbours
    assert evidence.images == ["frame.png", "overlay.jpg", "mask.png", "mask_frame.png"]
    assert np.array_equal(read_png(folder / "frame.png"), outcome.frame.image)
    assert outcome.mask is not None and outcome.crop_box is not None
    assert np.array_equal(read_png(folder / "mask.png"), outcome.mask)
    in_frame = crop_to_frame(outcome.mask, outcome.crop_box, outcome.frame.image.shape[:2])
    assert np.array_equal(read_png(folder / "mask_frame.png"), in_frame)
    assert (folder / "overlay.jpg").read_bytes()[:2] == b"\xff\xd8"
    assert evidence.defect_boxes is not None and evidence.defect_boxes.crop is not None


def test_fail_records_are_complete_parseable_and_named_by_camera_day_and_seq(
    tmp_path: Path, scored_line: ScoredLine
) -> None:
    registry = CollectorRegistry()
    archive = open_archive(tmp_path / "archive", registry)
    for outcome in fails(scored_line):
        record = archive.write(outcome)
        assert record is not None
        assert record.path.parent.parent == tmp_path / "archive" / "cam1"
        assert record.path.name.split("_")[1:] == [f"{outcome.seq:08d}", "FAIL", scored_line.boot_id]
        assert_complete(record.path, outcome)
        assert archive.find("cam1", outcome.seq, scored_line.boot_id) == record
    assert not list((tmp_path / "archive").rglob(f"{TMP_PREFIX}*"))
    assert sample(registry, "inspector_archive_records_total", camera="cam1", verdict="FAIL") == 2
    assert sample(registry, "inspector_archive_held_records") == 2
    assert sample(registry, "inspector_archive_held_bytes") == archive.total_bytes > 0


def test_timeout_and_error_records_hold_the_frame_and_the_header_without_masks(
    tmp_path: Path, scored_line: ScoredLine
) -> None:
    scored = scored_line.outcomes[0]
    failed = Outcome(frame=scored.frame, verdict="TIMEOUT", error="deadline_ms exceeded", published=None)
    header = json.loads(scored.published or "{}") | {
        "verdict": "TIMEOUT",
        "score": None,
        "threshold": None,
        "pixel_threshold": None,
        "defect_area_px": None,
        "defect_count": None,
        "defects": [],
        "error": "deadline_ms exceeded",
        "latency_ms": {"queue": 1.0, "encode": 0.0, "end_to_end": 1.0},
    }
    failed = dataclasses.replace(failed, published=VerdictHeader.model_validate(header).model_dump_json())
    archive = open_archive(tmp_path)
    assert archive.wants(failed)
    record = archive.write(failed)
    assert record is not None
    assert sorted(p.name for p in record.path.iterdir()) == [
        "evidence.json",
        "frame.png",
        "header.json",
        "overlay.jpg",
    ]
    assert Evidence.model_validate_json((record.path / "evidence.json").read_bytes()).crop is None


def test_pass_verdicts_are_sampled_at_the_configured_rate(tmp_path: Path, scored_line: ScoredLine) -> None:
    passes = [o for o in scored_line.outcomes if o.verdict == "PASS"]
    assert not any(DefectArchive(tmp_path, ArchiveConfig()).wants(o) for o in passes)
    half = DefectArchive(tmp_path, ArchiveConfig(pass_sample_rate=0.5))
    assert [half.wants(o) for o in passes] == [True, False] * (len(passes) // 2) + [True] * (len(passes) % 2)
    every = DefectArchive(tmp_path, ArchiveConfig(pass_sample_rate=1.0))
    assert all(every.wants(o) for o in passes)
    assert all(DefectArchive(tmp_path, ArchiveConfig()).wants(o) for o in fails(scored_line))


def test_retention_keeps_the_total_size_under_its_limit_removing_the_oldest_first(
    tmp_path: Path, scored_line: ScoredLine
) -> None:
    registry = CollectorRegistry()
    probe = open_archive(tmp_path / "probe")
    record = probe.write(scored_line.outcomes[0])
    assert record is not None
    limit_bytes = 2.5 * record.size_bytes  # room for two records of this size
    archive = open_archive(tmp_path / "archive", registry, max_total_mb=limit_bytes / MIB)
    for outcome in scored_line.outcomes[:5]:
        archive.write(outcome)
    kept = [r.seq for r in archive.records()]
    assert kept == [3, 4]
    assert archive.total_bytes <= limit_bytes
    on_disk = sorted(p.name.split("_")[1] for p in (tmp_path / "archive" / "cam1").glob("*/*"))
    assert on_disk == ["00000003", "00000004"]
    assert sample(registry, "inspector_archive_removed_total", reason="size") == 3


def test_retention_removes_records_past_their_age_and_empty_day_folders(
    tmp_path: Path, scored_line: ScoredLine
) -> None:
    outcome = fails(scored_line)[0]
    record = open_archive(tmp_path, max_age_days=1.0).write(outcome)
    assert record is not None and record.path.exists()
    assert json.loads(outcome.published or "{}")["captured_at"].startswith(
        record.path.parent.name
    )  # UTC days
    registry = CollectorRegistry()
    day_later = record.captured_at + DAY_S + 1.0
    later = DefectArchive(
        tmp_path, ArchiveConfig(max_age_days=1.0), OutputMetrics(registry), lambda: day_later
    )
    later.open()
    assert later.records() == [] and not record.path.exists() and not record.path.parent.exists()
    assert sample(registry, "inspector_archive_removed_total", reason="age") == 1


def test_open_indexes_what_is_on_disk_and_removes_half_written_records(
    tmp_path: Path, scored_line: ScoredLine
) -> None:
    first = open_archive(tmp_path)
    written = [first.write(o) for o in fails(scored_line)]
    day = written[0].path.parent if written[0] else tmp_path
    (day / f"{TMP_PREFIX}120000.000000_00000099_FAIL_{scored_line.boot_id}").mkdir()  # a crash mid-write
    again = open_archive(tmp_path)
    assert [(r.seq, r.size_bytes) for r in again.records()] == [(w.seq, w.size_bytes) for w in written if w]
    assert not list(day.glob(f"{TMP_PREFIX}*"))
    assert again.latest("cam1") == again.records()[-1]


def test_an_archive_that_cannot_be_written_skips_and_counts_without_raising(
    tmp_path: Path, scored_line: ScoredLine
) -> None:
    registry = CollectorRegistry()
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the archive should be")
    archive = open_archive(blocker / "archive", registry)
    for outcome in fails(scored_line):
        assert archive.write(outcome) is None
    assert sample(registry, "inspector_archive_skipped_writes_total", camera="cam1", reason="io_error") == 2
    assert archive.records() == []


@pytest.mark.skipif(
    os.geteuid() == 0, reason="root writes through permission bits (the daemon test mounts read-only)"
)
def test_a_folder_without_write_permission_counts_permission_denied(
    tmp_path: Path, scored_line: ScoredLine
) -> None:
    registry = CollectorRegistry()
    root = tmp_path / "archive"
    root.mkdir()
    root.chmod(0o500)
    try:
        archive = open_archive(root, registry)
        assert archive.write(fails(scored_line)[0]) is None
    finally:
        root.chmod(0o700)
    assert (
        sample(registry, "inspector_archive_skipped_writes_total", camera="cam1", reason="permission_denied")
        == 1
    )


@pytest.mark.parametrize(
    ("code", "reason"),
    [(errno.ENOSPC, "disk_full"), (errno.EDQUOT, "disk_full"), (errno.EFBIG, "disk_full"), (errno.EROFS, "read_only"),
     (errno.EACCES, "permission_denied"), (errno.EPERM, "permission_denied"), (errno.EIO, "io_error")],
)  # fmt: skip
def test_each_os_error_has_its_skip_reason(code: int, reason: str) -> None:
    assert skip_reason(OSError(code, os.strerror(code))) == reason

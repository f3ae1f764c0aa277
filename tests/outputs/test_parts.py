"""The parts sink's record of a published header: every field the database keeps, defect regions included."""

from __future__ import annotations

import json

from inspector.outputs.parts import record_of
from inspector.records.schema import PartRecord

BOOT = "0123456789abcdef0123456789abcdef"


def header(**fields: object) -> bytes:
    doc = {
        "schema": 6, "boot_id": BOOT, "camera": "cam1", "seq": 7, "part_id": "P-7", "verdict": "FAIL",
        "captured_at": "2026-12-07T05:30:00.000000Z", "published_at": "2026-12-07T05:30:00.080000Z",
        "age_ms": 80.0, "score": 3.0, "threshold": 2.0, "defect_area_px": 40, "product": "a", "gallery": "ab" * 32,
        "latency_ms": {"end_to_end": 80.0}, "error": None, "defect_count": 0, "defects": [],
    } | fields  # fmt: skip
    return json.dumps(doc).encode()


def test_a_record_keeps_the_defect_count_and_the_largest_region_s_area() -> None:
    regions = [
        {"area_px": 130, "peak": 4.0, "box": [1, 2, 30, 20]},
        {"area_px": 12, "peak": 2.5, "box": [0, 0, 4, 3]},
    ]
    found = record_of((header(defect_count=5, defects=regions), False))
    assert isinstance(found, PartRecord)
    assert (found.defect_count, found.largest_defect_area_px, found.defect_area_px) == (5, 130, 40)
    none = record_of((header(verdict="PASS", defect_area_px=0), False))
    assert isinstance(none, PartRecord) and (none.defect_count, none.largest_defect_area_px) == (0, 0)
    older = record_of((header(schema=4, defect_count=None, defects=None), False))  # a spooled schema-4 header
    assert isinstance(older, PartRecord) and (older.defect_count, older.largest_defect_area_px) == (
        None,
        None,
    )

"""Records for the parts database tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from inspector.records.schema import PartRecord

T0 = datetime(2026, 12, 7, 5, 30, tzinfo=UTC)
BOOT = "0123456789abcdef0123456789abcdef"


def record(
    seq: int, *, camera: str = "cam1", boot_id: str = BOOT, verdict: str = "PASS", **extra: object
) -> PartRecord:
    """A PASS record of ``camera`` one second per seq after ``T0``, with a part id ``P-<seq>``."""
    at = T0 + timedelta(seconds=seq)
    values: dict[str, object] = {
        "boot_id": boot_id, "camera": camera, "seq": seq, "verdict": verdict, "captured_at": at,
        "published_at": at + timedelta(milliseconds=80), "part_id": f"P-{seq:06d}", "product": "flange",
        "gallery": "ab" * 32, "score": 1.0 + seq / 1000, "threshold": 2.0, "defect_area_px": 0,
        "end_to_end_ms": 80.0, "age_ms": 80.0,
    }  # fmt: skip
    if verdict in ("ERROR", "TIMEOUT"):
        values |= {"score": None, "threshold": None, "defect_area_px": None, "error": "no frame"}
    values.update(extra)
    return PartRecord(**values)  # type: ignore[arg-type]

"""Judged parts as a labelled folder (MVTec layout, image-level labels): what a re-teach starts from."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

FRAME_FILE = "frame.png"
GOOD_FOLDER = ("train", "good")


def target_folder(record: dict[str, Any]) -> tuple[str, ...]:
    """Where a judged record's frame goes: ``<product>/train/good`` or ``<product>/test/<defect type>``."""
    product = record["product"] or "unknown_product"
    if record["judgment"]["judgment"] == "good":
        return (product, *GOOD_FOLDER)
    return (product, "test", record["judgment"]["defect_type"] or "defect")


def write_export(records: list[dict[str, Any]], root: Path, out: Path) -> tuple[int, list[dict[str, Any]]]:
    """Copy each record's frame into a staging folder beside ``out``, then rename it to ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    missing: list[dict[str, Any]] = []
    written = 0
    try:
        for record in records:
            frame = root / str(record["archive_record"] or "") / FRAME_FILE
            if not record["archive_record"] or not frame.is_file():
                missing.append(record)
                continue
            folder = staging.joinpath(*target_folder(record))
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(
                frame, folder / f"{record['camera']}_{record['seq']:08d}_{record['boot_id'][:8]}.png"
            )
            written += 1
        os.rename(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return written, missing

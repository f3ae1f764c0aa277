"""Offline scoring of image files against a gallery: text/JSON lines and overlay PNGs."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import cv2
import numpy as np

from inspector.config import ModelConfig
from inspector.engine import Inspector, ScoreResult, iter_batches
from inspector.preprocess import ImageReadError, read_image
from inspector.report import overlay_heatmap

EXIT_OK = 0
EXIT_UNREADABLE = 3
MAP_FULL_SCALE_X_THRESHOLD = 2.0  # colour scale: 0 .. 2x the pixel threshold (threshold at mid-scale)
U8_AT_THRESHOLD = 128.0  # 8-bit map value of the pixel threshold


@dataclass(frozen=True)
class FileScore:
    """A scored file, or the reason it could not be read."""

    path: Path
    result: ScoreResult | None
    error: str | None


def map_to_u8(amap: np.ndarray, pixel_threshold: float) -> np.ndarray:
    """Anomaly map as 8-bit, linear with 128 at the pixel threshold: u8 >= 128 exactly where amap >= it.

    0 means no anomaly; values from about twice the threshold saturate at 255.
    """
    per_unit = U8_AT_THRESHOLD / max(pixel_threshold, 1e-12)
    return np.clip(np.floor(amap.astype(np.float64) * per_unit), 0, 255).astype(np.uint8)


def score_files(inspector: Inspector, paths: Sequence[Path]) -> Iterator[FileScore]:
    """Score files batch by batch; unreadable files are yielded with their error and do not stop the rest."""
    for batch in iter_batches(list(paths), inspector.config.batch_size):
        readable: list[tuple[Path, np.ndarray]] = []
        for p in batch:
            try:
                readable.append((p, read_image(p)))
            except ImageReadError as exc:
                yield FileScore(p, None, str(exc))
        if readable:
            results = inspector.score([im for _, im in readable])
            for (p, _), r in zip(readable, results, strict=True):
                yield FileScore(p, r, None)


def format_line(fs: FileScore, as_json: bool) -> str:
    """One output line: text (path, score, threshold, verdict, defect area) or a JSON object."""
    r = fs.result
    if as_json:
        doc: dict[str, object] = {"path": str(fs.path)}
        if r is None:
            doc.update(verdict="UNREADABLE", error=fs.error)
        else:
            doc.update(
                score=round(r.score, 6),
                threshold=round(r.threshold, 6),
                verdict=r.verdict,
                defect_area_px=r.defect_area_px,
                knn_score=round(r.knn_score, 6),
                map_max=round(r.map_max, 6),
            )
        return json.dumps(doc)
    if r is None:
        return f"{fs.path}\tUNREADABLE\t{fs.error}"
    return f"{fs.path}\tscore={r.score:.4f}\tthreshold={r.threshold:.4f}\t{r.verdict}\tarea={r.defect_area_px}px"


def write_overlays(out_dir: Path, fs: FileScore, pixel_threshold: float, stem: str | None = None) -> None:
    """Write <stem>_overlay.png (heatmap over the crop) and <stem>_mask.png (binary mask)."""
    assert fs.result is not None
    stem = stem or fs.path.stem
    out_dir.mkdir(parents=True, exist_ok=True)
    full_scale = max(pixel_threshold * MAP_FULL_SCALE_X_THRESHOLD, 1e-12)
    heat = overlay_heatmap(fs.result.crop, fs.result.anomaly_map, 0.0, full_scale)
    for name, img in (("overlay", heat), ("mask", fs.result.mask)):
        target = out_dir / f"{stem}_{name}.png"
        if not cv2.imwrite(str(target), img):
            raise OSError(f"{target}: cannot write")


def unique_stem(path: Path, taken: set[str]) -> str:
    """The file's stem, prefixed by its parent folders as needed so that no two outputs share a name."""
    parts = [path.stem]
    for parent in path.parents:
        if "_".join(parts) not in taken or not parent.name:
            break
        parts.insert(0, parent.name)
    stem = "_".join(parts)
    while stem in taken:
        stem += "_"
    taken.add(stem)
    return stem


def score_paths(
    gallery: Path,
    paths: Sequence[Path],
    runtime: ModelConfig,
    as_json: bool,
    overlay_dir: Path | None,
    out: TextIO,
) -> int:
    """The ``inspector score`` command. Returns 0, or 3 when any file could not be read."""
    inspector = Inspector.from_gallery(gallery, runtime)
    cal = inspector.gallery.manifest.calibration
    assert cal is not None
    unreadable = 0
    stems: set[str] = set()
    for fs in score_files(inspector, paths):
        print(format_line(fs, as_json), file=out, flush=True)
        if fs.result is None:
            unreadable += 1
        elif overlay_dir is not None:
            write_overlays(overlay_dir, fs, cal.pixel_threshold, unique_stem(fs.path, stems))
    return EXIT_UNREADABLE if unreadable else EXIT_OK

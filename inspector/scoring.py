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

EXIT_OK = 0
EXIT_UNREADABLE = 3
OVERLAY_ALPHA = 0.5
MAP_FULL_SCALE_X_THRESHOLD = 2.0  # colour scale: 0 .. 2x the pixel threshold (threshold at mid-scale)


@dataclass(frozen=True)
class FileScore:
    """A scored file, or the reason it could not be read."""

    path: Path
    result: ScoreResult | None
    error: str | None


def map_to_u8(amap: np.ndarray, pixel_threshold: float) -> np.ndarray:
    """Anomaly map as 8-bit: 0 = no anomaly, 128 = the pixel threshold, 255 = twice it or more."""
    full = max(pixel_threshold * MAP_FULL_SCALE_X_THRESHOLD, 1e-12)
    return np.clip(amap / full * 255.0, 0, 255).astype(np.uint8)


def overlay(crop_bgr: np.ndarray, amap_u8: np.ndarray) -> np.ndarray:
    """JET heatmap blended over the crop the network saw."""
    heat = cv2.applyColorMap(amap_u8, cv2.COLORMAP_JET)
    return cv2.addWeighted(crop_bgr, 1.0 - OVERLAY_ALPHA, heat, OVERLAY_ALPHA, 0.0)


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


def write_overlays(out_dir: Path, fs: FileScore, pixel_threshold: float) -> None:
    """Write <stem>_overlay.png (heatmap over the crop) and <stem>_mask.png (binary mask)."""
    assert fs.result is not None
    out_dir.mkdir(parents=True, exist_ok=True)
    u8 = map_to_u8(fs.result.anomaly_map, pixel_threshold)
    for name, img in (("overlay", overlay(fs.result.crop, u8)), ("mask", fs.result.mask)):
        target = out_dir / f"{fs.path.stem}_{name}.png"
        if not cv2.imwrite(str(target), img):
            raise OSError(f"{target}: cannot write")


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
    for fs in score_files(inspector, paths):
        print(format_line(fs, as_json), file=out, flush=True)
        if fs.result is None:
            unreadable += 1
        elif overlay_dir is not None:
            write_overlays(overlay_dir, fs, cal.pixel_threshold)
    return EXIT_UNREADABLE if unreadable else EXIT_OK

"""Offline scoring of image files against a gallery: text/JSON lines and overlay PNGs."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import cv2
import numpy as np

from inspector.config.runtime import RuntimeConfig
from inspector.core.names import EXIT_OK, EXIT_UNREADABLE, IMAGE_SUFFIXES
from inspector.model.engine import Inspector, ScoreResult, iter_batches
from inspector.model.geometry import SizeRange, inspected_rect
from inspector.model.maps import crop_to_frame, frame_overlay
from inspector.model.preprocess import ImageReadError, read_image

RECORD_VERDICT = "verdict"
RECORD_UNREADABLE = "unreadable"
SCORE_DIGITS = 6


@dataclass(frozen=True)
class FileScore:
    """A scored file (with its image, for frame overlays), or the reason it could not be read."""

    path: Path
    result: ScoreResult | None
    error: str | None
    image: np.ndarray | None = None


def score_files(inspector: Inspector, paths: Sequence[Path]) -> Iterator[FileScore]:
    """Score files batch by batch, in input order; an unreadable file is yielded with its error in its place."""
    batch_size = inspector.engine.runtime.batch_size
    for batch in iter_batches(list(paths), batch_size):
        images: dict[int, np.ndarray] = {}
        errors: dict[int, str] = {}
        for i, p in enumerate(batch):
            try:
                images[i] = read_image(p)
            except ImageReadError as exc:
                errors[i] = str(exc)
        results = dict(zip(images, inspector.score(list(images.values())), strict=True)) if images else {}
        for i, p in enumerate(batch):
            yield FileScore(p, results.get(i), errors.get(i), images.get(i))


def format_line(fs: FileScore, as_json: bool, gallery: str | None = None) -> str:
    """One output line: text (path, score, threshold, verdict, defect area) or a JSON record.

    JSON records use the wire's field names and verdict words: ``{"kind": "verdict", "path", "verdict",
    "score", "threshold", "defect_area_px", "gallery", "knn_score", "map_max", "defect_area_frame_px",
    "inspected_px"}`` (``defect_area_px`` counts the model's mask pixels, as on the bus; the text line's
    ``area`` and ``defect_area_frame_px`` are in frame pixels; ``inspected_px`` is the inspected rectangle
    ``[x0, y0, x1, y1]`` in frame pixels), and an unreadable file is its own kind, ``{"kind": "unreadable",
    "path", "error"}``, never a verdict.
    """
    r = fs.result
    if as_json:
        doc: dict[str, object] = {"path": str(fs.path)}
        if r is None:
            doc = {"kind": RECORD_UNREADABLE, **doc, "error": fs.error}
        else:
            doc = {
                "kind": RECORD_VERDICT,
                **doc,
                "verdict": r.verdict,
                "score": round(r.score, SCORE_DIGITS),
                "threshold": round(r.threshold, SCORE_DIGITS),
                "defect_area_px": r.defect_area_px,
                "gallery": gallery,
                "knn_score": round(r.knn_score, SCORE_DIGITS),
                "map_max": round(r.map_max, SCORE_DIGITS),
                "defect_area_frame_px": r.defect_area_frame_px,
                "inspected_px": _inspected(fs),
            }
        return json.dumps(doc)
    if r is None:
        return f"{fs.path}\tUNREADABLE\t{fs.error}"
    return (
        f"{fs.path}\tscore={r.score:.4f}\tthreshold={r.threshold:.4f}\t{r.verdict}"
        f"\tarea={r.defect_area_frame_px}px"
    )


def _inspected(fs: FileScore) -> list[int] | None:
    if fs.result is None or fs.result.crop_box is None or fs.image is None:
        return None
    r = inspected_rect(fs.result.crop_box, fs.image.shape[1], fs.image.shape[0])
    return [r.x0, r.y0, r.x1, r.y1]


def write_overlays(out_dir: Path, fs: FileScore, pixel_threshold: float, stem: str | None = None) -> None:
    """Write <stem>_overlay.png (the frame, the heatmap over what was inspected, its edge and the defects
    outlined) and <stem>_mask.png (the defect mask in frame pixels)."""
    assert fs.result is not None and fs.result.crop_box is not None and fs.image is not None
    stem = stem or fs.path.stem
    out_dir.mkdir(parents=True, exist_ok=True)
    r, box = fs.result, fs.result.crop_box
    heat = frame_overlay(fs.image, r.anomaly_map, box, pixel_threshold, r.mask)
    mask = crop_to_frame(r.mask, box, fs.image.shape[:2])
    for name, img in (("overlay", heat), ("mask", mask)):
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


def expand_paths(paths: Sequence[Path]) -> list[Path]:
    """Files as given; a folder becomes the images directly in it, sorted by name (a folder without images
    stays itself, so that it is reported as unreadable in its place)."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            out += images or [path]
        else:
            out.append(path)
    return out


def score_paths(
    gallery: Path,
    paths: Sequence[Path],
    runtime: RuntimeConfig,
    as_json: bool,
    overlay_dir: Path | None,
    out: TextIO,
    warnings: TextIO | None = None,
) -> int:
    """The ``inspector score`` command. Returns 0, or 3 when any file could not be read.

    A file whose size is not the gallery's (beyond the tolerance) is still scored, with a warning naming
    both sizes on ``warnings`` (default stderr); the daemon makes such a frame an ERROR verdict.
    """
    inspector = Inspector.from_gallery(gallery, runtime)
    paths = expand_paths(paths)
    cal = inspector.gallery.manifest.calibration
    assert cal is not None
    sizes = SizeRange.of(inspector.gallery.manifest)
    unreadable = 0
    stems: set[str] = set()
    for fs in score_files(inspector, paths):
        problem = (
            sizes.problem(fs.image.shape[1], fs.image.shape[0]) if sizes and fs.image is not None else None
        )
        if problem:
            print(f"warning: {fs.path}: {problem}", file=warnings or sys.stderr, flush=True)
        print(format_line(fs, as_json, inspector.gallery.content_hash), file=out, flush=True)
        if fs.result is None:
            unreadable += 1
        elif overlay_dir is not None:
            write_overlays(overlay_dir, fs, cal.pixel_threshold, unique_stem(fs.path, stems))
    return EXIT_UNREADABLE if unreadable else EXIT_OK

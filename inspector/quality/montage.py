"""The error montage: worst false rejects, worst escapes per defect type, ground truth outlined, a colour bar."""

from __future__ import annotations

import math
from pathlib import PurePath
from typing import TYPE_CHECKING

import cv2
import numpy as np

from inspector.model.maps import MAP_FULL_SCALE_X_THRESHOLD, overlay_heatmap

if TYPE_CHECKING:
    from inspector.quality.report import CategoryEval

FALSE_REJECT_ROWS = 4
ESCAPES_PER_TYPE = 2
TILE_MIN_PX = 160  # montage tiles are upscaled (nearest) to at least this size
LABEL_BAND_PX = 24
TILE_GAP_PX = 4
BAR_WIDTH_PX = 14
BAR_LABEL_PX = 96  # room right of the colour bar for its value labels
FONT = cv2.FONT_HERSHEY_SIMPLEX
FONT_SCALE = 0.45
BAND_BGR = (40, 40, 40)
ERROR_TEXT_BGR = (80, 80, 255)
PLAIN_TEXT_BGR = (230, 230, 230)
OUTLINE_BGR = (0, 255, 0)  # ground truth
THRESHOLD_BGR = (255, 255, 255)
OUTLINE_PX = 1
U8_MAX = 255


def select_false_rejects(ev: CategoryEval, limit: int = FALSE_REJECT_ROWS) -> list[int]:
    """Good images above the threshold, highest score first; if none, the highest-scoring good images."""
    good = np.flatnonzero(np.asarray(ev.labels) == 0)
    ranked = good[np.argsort(-np.asarray(ev.scores)[good], kind="stable")]
    rejected = ranked[np.asarray(ev.scores)[ranked] > ev.threshold]
    return [int(i) for i in (rejected if rejected.size else ranked)[:limit]]


def select_escapes(ev: CategoryEval, per_type: int = ESCAPES_PER_TYPE) -> list[int]:
    """Per defect type (sorted by name): its escapes (score at or below the threshold), lowest score first;
    a type with none shows its lowest-scoring images instead. At most ``per_type`` each."""
    scores = np.asarray(ev.scores)
    types = np.array(ev.defect_types)
    out: list[int] = []
    for kind in sorted({t for t, label in zip(ev.defect_types, ev.labels, strict=True) if label == 1}):
        members = np.flatnonzero((types == kind) & (np.asarray(ev.labels) == 1))
        ranked = members[np.argsort(scores[members], kind="stable")]
        escaped = ranked[scores[ranked] <= ev.threshold]
        out += [int(i) for i in (escaped if escaped.size else ranked)[:per_type]]
    return out


def heat_range(ev: CategoryEval) -> tuple[float, float]:
    """Colour scale of the heatmaps: 0 .. 2x the pixel threshold (as the product draws them), else the maps'."""
    if ev.pixel_threshold is not None and ev.pixel_threshold > 0:
        return 0.0, ev.pixel_threshold * MAP_FULL_SCALE_X_THRESHOLD
    vmin, vmax = float(np.min(ev.maps)), float(np.max(ev.maps))
    return vmin, vmax if vmax > vmin else vmin + 1.0


def outline(tile: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The tile with the mask's region boundaries drawn on it (mask already at the tile's size)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    drawn = tile.copy()
    cv2.drawContours(drawn, contours, -1, OUTLINE_BGR, OUTLINE_PX)
    return drawn


def colour_bar(height: int, vmin: float, vmax: float, marks: list[tuple[str, float]]) -> np.ndarray:
    """A vertical JET bar (hot at the top) with its range and the marked values (lines and labels)."""
    bar = np.full((height, BAR_WIDTH_PX + BAR_LABEL_PX, 3), BAND_BGR, dtype=np.uint8)
    ramp = np.linspace(U8_MAX, 0, height).round().astype(np.uint8)[:, None]
    bar[:, :BAR_WIDTH_PX] = cv2.applyColorMap(np.repeat(ramp, BAR_WIDTH_PX, axis=1), cv2.COLORMAP_JET)
    for text, y in ((f"{vmax:.3g}", 12), (f"{vmin:.3g}", height - 4)):
        cv2.putText(bar, text, (BAR_WIDTH_PX + 4, y), FONT, FONT_SCALE, PLAIN_TEXT_BGR, 1, cv2.LINE_AA)
    for name, value in marks:
        if vmin <= value <= vmax:
            y = round((vmax - value) / (vmax - vmin) * (height - 1))
            cv2.line(bar, (0, y), (BAR_WIDTH_PX + 2, y), THRESHOLD_BGR, 1)
            label = f"{name} {value:.3g}"
            cv2.putText(bar, label, (BAR_WIDTH_PX + 4, min(height - 16, max(26, y + 4))), FONT, FONT_SCALE,
                        THRESHOLD_BGR, 1, cv2.LINE_AA)  # fmt: skip
    return bar


def _row_kind(ev: CategoryEval, index: int) -> tuple[str, bool]:
    score = float(ev.scores[index])
    if ev.labels[index]:
        return ("ESCAPE", True) if score <= ev.threshold else ("DEFECT (lowest of its type)", False)
    return ("FALSE REJECT", True) if score > ev.threshold else ("GOOD (highest scores)", False)


def row_label(ev: CategoryEval, index: int) -> str:
    """The label band's text: what the row shows, the file (defect type / file name), score and threshold."""
    kind, _ = _row_kind(ev, index)
    name = f"{ev.defect_types[index]}/{PurePath(ev.image_paths[index]).name}"
    return f"{kind}  {name}  score={float(ev.scores[index]):.4g}  thr={ev.threshold:.4g}"


def montage_row(ev: CategoryEval, index: int, scale: int, heat: tuple[float, float]) -> np.ndarray:
    """One row: a label band over the image and the heatmap, both with the ground truth outlined, and a bar."""
    image = ev.images[index]
    height, width = image.shape[0] * scale, image.shape[1] * scale
    big_mask = cv2.resize(
        np.asarray(ev.masks[index], np.uint8), (width, height), interpolation=cv2.INTER_NEAREST
    )
    tiles = [image, overlay_heatmap(image, ev.maps[index], *heat)]
    gap = np.full((height, TILE_GAP_PX, 3), BAND_BGR, dtype=np.uint8)
    marks = [("pixel thr", ev.pixel_threshold)] if ev.pixel_threshold is not None else []
    parts: list[np.ndarray] = []
    for tile in tiles:
        parts += [outline(cv2.resize(tile, (width, height), interpolation=cv2.INTER_NEAREST), big_mask), gap]
    body = np.hstack([*parts, colour_bar(height, *heat, marks)])
    band = np.full((LABEL_BAND_PX, body.shape[1], 3), BAND_BGR, dtype=np.uint8)
    _, is_error = _row_kind(ev, index)
    text = row_label(ev, index)
    cv2.putText(band, text, (6, LABEL_BAND_PX - 8), FONT, FONT_SCALE,
                ERROR_TEXT_BGR if is_error else PLAIN_TEXT_BGR, 1, cv2.LINE_AA)  # fmt: skip
    return np.vstack([band, body])


def render_montage(ev: CategoryEval) -> np.ndarray:
    """The worst false rejects, then the worst escapes of every defect type: uint8 BGR, one row per image."""
    indices = select_false_rejects(ev) + select_escapes(ev)
    scale = max(1, math.ceil(TILE_MIN_PX / min(ev.maps.shape[1:])))
    heat = heat_range(ev)
    rows = [montage_row(ev, i, scale, heat) for i in indices]
    header = np.full((LABEL_BAND_PX, rows[0].shape[1], 3), BAND_BGR, dtype=np.uint8)
    tile_w = ev.maps.shape[2] * scale + TILE_GAP_PX
    captions = ("image, ground truth outlined", "heatmap, ground truth outlined", "map value")
    for col, caption in enumerate(captions):
        cv2.putText(
            header, caption, (col * tile_w + 6, LABEL_BAND_PX - 8), FONT, FONT_SCALE, PLAIN_TEXT_BGR, 1
        )
    return np.vstack([header, *rows])

"""Regions of a frame: the inspection region a gallery is built with, and the defect regions of a mask."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from inspector.core.errors import InspectorError
from inspector.core.records import MAX_DEFECT_REGIONS, CropBox, DefectRegion
from inspector.model.digest import file_sha256
from inspector.model.geometry import frame_area_px
from inspector.model.manifest import RegionMask
from inspector.model.preprocess import PreprocessSpec, resize_and_crop

MASK_ON = 127  # a preprocessed mask pixel above this is inspected (white), at or below it ignored (black)
CONNECTIVITY = 8  # defect regions: pixels touching at a corner belong to one region


class RegionError(InspectorError):
    """An inspection region mask that cannot be used (the message names the file)."""


@dataclass(frozen=True)
class InspectionRegion:
    """An inspection region ready for a gallery: the crop-sized mask (1 inspected, 0 ignored) and its record."""

    mask: torch.Tensor
    record: RegionMask


def read_region_mask(path: Path, spec: PreprocessSpec, sizes: Sequence[tuple[int, int]]) -> InspectionRegion:
    """Read a region mask PNG (white = inspect, black = ignore, in frame pixels) and preprocess it like a frame.

    Args:
        path: the mask image; any 8-bit image, read as gray.
        spec: the gallery's preprocessing (resize, crop, aspect).
        sizes: the (width, height) of the gallery's images; the mask must have each of them.

    Raises:
        RegionError: not readable, another size than the images, or nothing left to inspect in the crop.
    """
    data = np.fromfile(str(path), dtype=np.uint8) if Path(path).is_file() else None
    gray = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if data is not None and data.size else None
    if gray is None:
        raise RegionError(
            f"region mask {path}: {'not a decodable image' if data is not None else 'not found'}"
        )
    height, width = gray.shape
    other = sorted({s for s in sizes if s != (width, height)})
    if other:
        listed = ", ".join(f"{w}x{h}" for w, h in other[:3])
        raise RegionError(
            f"region mask {path}: {width}x{height} px, but the gallery's images are {listed} px (a region mask "
            "is drawn in the frame's pixels, at the camera's resolution)"
        )
    inspected = int(np.count_nonzero(gray > MASK_ON))
    crop, (y0, y1, x0, x1) = resize_and_crop(gray, spec)
    on = crop[:, :, 0] > MASK_ON
    content = np.zeros_like(on)
    content[y0:y1, x0:x1] = True
    on &= content
    if inspected == 0 or not on.any():
        where = "is black everywhere" if inspected == 0 else "leaves nothing of the model's crop to inspect"
        raise RegionError(
            f"region mask {path}: nothing to inspect: it {where} (white = inspect, black = ignore)"
        )
    record = RegionMask(
        name=Path(path).name,
        sha256=file_sha256(Path(path)),
        width_px=width,
        height_px=height,
        inspected_fraction=float(on.mean()),
    )
    return InspectionRegion(torch.from_numpy(on.astype(np.float32)), record)


def defect_regions(
    mask: np.ndarray, amap: np.ndarray, box: CropBox, frame_wh: tuple[int, int]
) -> tuple[tuple[DefectRegion, ...], int]:
    """The connected regions of a 0/255 crop mask (8-connected), in frame pixels, largest first.

    Args:
        mask: uint8 [crop, crop] defect mask.
        amap: the anomaly map it was thresholded from (each region's peak).
        box: where the crop lies in the frame.
        frame_wh: the frame's (width, height): boxes are clipped to it.

    Returns:
        At most ``MAX_DEFECT_REGIONS`` regions (largest area first, then highest peak), and how many there are.
    """
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        (mask > 0).astype(np.uint8), connectivity=CONNECTIVITY
    )
    if count <= 1:
        return (), 0
    label_ids = np.arange(1, count)
    peaks = np.zeros(count, dtype=np.float64)
    np.maximum.at(peaks, labels.ravel().astype(np.intp), np.asarray(amap, np.float64).ravel())
    width, height = frame_wh
    found = []
    for label in label_ids:
        x, y, w, h, pixels = (int(v) for v in stats[label])
        fx0, fy0 = box.to_frame(x, y)
        fx1, fy1 = box.to_frame(x + w, y + h)
        found.append(
            DefectRegion(
                area_px=frame_area_px(pixels, box),
                peak=float(peaks[label]),
                x0=max(0, math.floor(fx0)),
                y0=max(0, math.floor(fy0)),
                x1=min(width, math.ceil(fx1)),
                y1=min(height, math.ceil(fy1)),
            )
        )
    found.sort(key=lambda r: (-r.area_px, -r.peak))
    return tuple(found[:MAX_DEFECT_REGIONS]), len(found)

"""Tests for inspector.model.maps: crop-to-frame mapping against a float64 reference, boxes and frame overlays."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from inspector.core.records import CropBox
from inspector.model.maps import MASK_ON, REGION_BGR, crop_to_frame, defect_mask, frame_overlay, mask_bbox

SIDE = 32
AGREEMENT = 0.99  # OpenCV's fixed-point coordinates may round a pixel next to a cell boundary the other way


def reference_to_frame(mask: np.ndarray, box: CropBox, frame_hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour mapping in float64: each frame pixel centre takes the crop pixel it falls in."""
    height, width = frame_hw
    xs = (np.arange(width, dtype=np.float64) + 0.5 - box.x0) * box.side_px / (box.x1 - box.x0)
    ys = (np.arange(height, dtype=np.float64) + 0.5 - box.y0) * box.side_px / (box.y1 - box.y0)
    u, v = np.floor(xs).astype(int), np.floor(ys).astype(int)
    inside = (u[None, :] >= 0) & (u[None, :] < box.side_px) & (v[:, None] >= 0) & (v[:, None] < box.side_px)
    out = np.zeros(frame_hw, mask.dtype)
    vv, uu = np.meshgrid(np.clip(v, 0, box.side_px - 1), np.clip(u, 0, box.side_px - 1), indexing="ij")
    out[inside] = mask[vv, uu][inside]
    return out


@pytest.mark.parametrize(
    "box",
    [
        CropBox(10.3, 5.7, 90.3, 85.7, SIDE),  # crop inside the frame, upscaled
        CropBox(-20.2, 12.9, 140.2, 87.1, SIDE),  # letterbox: the crop reaches outside the frame
        CropBox(0.1, 0.2, 120.1, 100.2, SIDE),  # squash: different scales per axis
    ],
)  # offsets off the half-pixel grid: no frame pixel centre falls exactly on a crop cell boundary (a tie)
def test_crop_to_frame_matches_the_float64_reference(box: CropBox) -> None:
    rng = np.random.default_rng(0)
    mask = np.where(rng.random((SIDE, SIDE)) > 0.7, MASK_ON, 0).astype(np.uint8)
    got = crop_to_frame(mask, box, (100, 120))
    want = reference_to_frame(mask, box, (100, 120))
    assert got.shape == want.shape == (100, 120)
    assert np.mean(got == want) >= AGREEMENT
    assert set(np.unique(got)) <= {0, MASK_ON}


def test_crop_to_frame_keeps_a_map_value_and_is_zero_outside_the_crop() -> None:
    box = CropBox(20.0, 10.0, 60.0, 50.0, SIDE)
    warped = crop_to_frame(np.full((SIDE, SIDE), 0.75, np.float32), box, (80, 80), cv2.INTER_LINEAR)
    assert warped[30, 40] == pytest.approx(0.75)
    assert warped[5, 5] == 0.0 and warped[70, 70] == 0.0


def test_crop_to_frame_refuses_an_image_of_the_wrong_size() -> None:
    with pytest.raises(ValueError, match="expected a 32x32"):
        crop_to_frame(np.zeros((8, 8), np.uint8), CropBox(0, 0, 8, 8, SIDE), (8, 8))


def test_mask_bbox_bounds_the_set_pixels_or_is_none() -> None:
    mask = np.zeros((10, 12), np.uint8)
    assert mask_bbox(mask) is None
    mask[2:5, 3:9] = MASK_ON
    assert mask_bbox(mask) == (3, 2, 9, 5)


def test_frame_overlay_colours_only_the_crop_and_outlines_the_defect() -> None:
    frame = np.full((60, 100, 3), 90, np.uint8)
    box = CropBox(40.0, 10.0, 80.0, 50.0, SIDE)
    amap = np.zeros((SIDE, SIDE), np.float32)
    amap[10:20, 10:20] = 3.0
    out = frame_overlay(frame, amap, box, 1.0, defect_mask(amap, 1.0))
    assert out.shape == frame.shape and out.dtype == np.uint8
    assert np.array_equal(out[:, :35], frame[:, :35])  # left of the crop: the camera's pixels untouched
    assert not np.array_equal(out[20:40, 50:70], frame[20:40, 50:70])  # the heatmap is drawn inside


def test_frame_overlay_draws_the_inspection_region_s_edge_in_its_own_colour() -> None:
    frame = np.full((60, 100, 3), 90, np.uint8)
    box = CropBox(40.0, 10.0, 80.0, 50.0, SIDE)
    amap = np.zeros((SIDE, SIDE), np.float32)
    region = np.zeros((SIDE, SIDE), np.uint8)
    region[:, SIDE // 2 :] = MASK_ON  # the right half of the crop is inspected
    plain = frame_overlay(frame, amap, box, 1.0)
    drawn = frame_overlay(frame, amap, box, 1.0, region=region)
    is_edge = np.all(drawn == REGION_BGR, axis=2)
    assert not np.all(plain == REGION_BGR, axis=2).any() and is_edge.any()
    xs = np.nonzero(is_edge)[1]
    assert xs.min() >= 59 and xs.max() <= 80  # the edge of the right half of the crop, in frame pixels
    assert np.array_equal(drawn[:, :35], frame[:, :35])

"""Inspection region masks (read, checked, preprocessed like a frame) and defect regions in frame pixels."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.core.records import MAX_DEFECT_REGIONS, CropBox
from inspector.model.preprocess import PreprocessSpec
from inspector.model.regions import RegionError, defect_regions, read_region_mask

SPEC = PreprocessSpec(64, 64, False, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
CROPPED = PreprocessSpec(64, 48, False, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def _png(path: Path, image: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), image)
    return path


def test_a_region_mask_is_resized_like_the_frame_and_recorded_with_its_hash_and_inspected_share(
    tmp_path: Path,
) -> None:
    mask = np.zeros((100, 200), np.uint8)
    mask[:, 100:] = 255  # the right half is inspected
    region = read_region_mask(_png(tmp_path / "right.png", mask), SPEC, [(200, 100), (200, 100)])
    assert region.mask.shape == (64, 64)
    assert region.mask[:, :31].sum() == 0 and bool((region.mask[:, 33:] == 1).all())
    assert (
        region.record.name == "right.png" and region.record.width_px == 200 and region.record.height_px == 100
    )
    assert region.record.inspected_fraction == pytest.approx(0.5, abs=0.02)
    assert len(region.record.sha256) == 64


def test_a_region_mask_of_another_size_than_the_images_is_refused_naming_the_file_and_sizes(
    tmp_path: Path,
) -> None:
    path = _png(tmp_path / "small.png", np.full((50, 80), 255, np.uint8))
    with pytest.raises(RegionError, match=r"small\.png: 80x50 px, but the gallery's images are 200x100"):
        read_region_mask(path, SPEC, [(200, 100)])


def test_a_region_mask_with_nothing_to_inspect_is_refused_naming_the_file(tmp_path: Path) -> None:
    black = _png(tmp_path / "black.png", np.zeros((64, 64), np.uint8))
    with pytest.raises(RegionError, match=r"black\.png: nothing to inspect: it is black everywhere"):
        read_region_mask(black, SPEC, [(64, 64)])
    corner = np.zeros((64, 64), np.uint8)
    corner[:4, :4] = 255  # only outside the centre crop of 48
    with pytest.raises(RegionError, match="leaves nothing of the model's crop"):
        read_region_mask(_png(tmp_path / "corner.png", corner), CROPPED, [(64, 64)])


def test_a_file_that_is_not_an_image_is_refused_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "mask.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(RegionError, match=r"mask\.png: not a decodable image"):
        read_region_mask(bad, SPEC, [(64, 64)])
    with pytest.raises(RegionError, match="not found"):
        read_region_mask(tmp_path / "missing.png", SPEC, [(64, 64)])


def test_defect_regions_are_connected_components_in_frame_pixels_largest_first() -> None:
    mask = np.zeros((32, 32), np.uint8)
    amap = np.zeros((32, 32), np.float32)
    mask[2:4, 2:4] = 255  # 4 crop pixels
    amap[3, 3] = 5.0
    mask[10:16, 20:23] = 255  # 18 crop pixels, one region with a diagonal neighbour below
    mask[16, 23] = 255
    amap[12, 21] = 3.0
    box = CropBox(0.0, 0.0, 64.0, 32.0, 32)  # each crop pixel covers 2 x 1 frame pixels
    regions, count = defect_regions(mask, amap, box, (64, 32))
    assert count == 2
    big, small = regions
    assert (big.area_px, small.area_px) == (2 * 19, 2 * 4)
    assert (big.peak, small.peak) == (3.0, 5.0)
    assert (big.x0, big.y0, big.x1, big.y1) == (40, 10, 48, 17)
    assert (small.x0, small.y0, small.x1, small.y1) == (4, 2, 8, 4)


def test_defect_regions_list_at_most_the_bound_and_count_them_all() -> None:
    mask = np.zeros((40, 40), np.uint8)
    mask[::2, ::2] = 255  # 400 single-pixel regions
    regions, count = defect_regions(mask, mask.astype(np.float32), CropBox(0, 0, 40, 40, 40), (40, 40))
    assert count == 400 and len(regions) == MAX_DEFECT_REGIONS
    assert defect_regions(np.zeros((4, 4), np.uint8), np.zeros((4, 4)), CropBox(0, 0, 4, 4, 4), (4, 4)) == (
        (),
        0,
    )


def test_region_boxes_are_clipped_to_the_frame_under_letterbox_padding() -> None:
    mask = np.full((8, 8), 255, np.uint8)
    box = CropBox(0.0, -4.0, 16.0, 12.0, 8)  # the crop reaches 4 px above and below an 16x8 frame
    (region,), _ = defect_regions(mask, np.ones((8, 8), np.float32), box, (16, 8))
    assert (region.x0, region.y0, region.x1, region.y1) == (0, 0, 16, 8)

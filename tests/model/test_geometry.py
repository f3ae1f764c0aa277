"""Tests for inspector.model.geometry: what of a frame is inspected, frame areas, and accepted frame sizes."""

from __future__ import annotations

import pytest

from inspector.config.model import ModelConfig
from inspector.core.records import CropBox
from inspector.model.geometry import FRAME_SIZE_TOLERANCE, SizeRange, describe, frame_area_px, inspected_rect
from inspector.model.preprocess import PreprocessSpec, crop_box

MEAN = STD = (0.5, 0.5, 0.5)
WIDE = (1130, 460)  # bsdata_pitting's frames


def _spec(model: ModelConfig) -> PreprocessSpec:
    return PreprocessSpec(model.resize_px, model.crop_px, model.keep_aspect, MEAN, STD)


@pytest.mark.parametrize("keep_aspect", [False, True])
def test_by_default_a_wide_frame_is_inspected_whole(keep_aspect: bool) -> None:
    model = ModelConfig(keep_aspect=keep_aspect)
    assert "crop_px" not in model.model_fields_set and model.crop_px == model.resize_px
    width, height = WIDE
    rect = inspected_rect(crop_box(height, width, _spec(model)), width, height)
    assert (rect.x0, rect.y0, rect.x1, rect.y1) == (0, 0, width, height)
    assert describe(crop_box(height, width, _spec(model)), width, height) == "whole frame 1130x460"


def test_the_mvtec_protocol_leaves_a_band_on_every_side_and_says_how_wide() -> None:
    width, height = WIDE
    box = crop_box(
        height, width, _spec(ModelConfig(resize_px=256, crop_px=224, keep_aspect=False))
    )  # squashed
    rect = inspected_rect(box, width, height)
    assert (rect.x0, rect.y0, rect.x1, rect.y1) == (71, 29, 1059, 431)  # the "x 70-1059, y 29-431"
    text = describe(box, width, height)
    assert text == (
        "x 71-1059, y 29-431 of 1130x460 (76% of the frame; never inspected: 71 px left, 71 right, 29 top, 29 bottom)"
    )


def test_a_letterboxed_frame_covers_the_frame_and_the_padding_is_outside_it() -> None:
    width, height = WIDE
    box = crop_box(height, width, _spec(ModelConfig(resize_px=224, keep_aspect=True)))
    assert box.y0 < 0 and box.y1 > height and box.x0 == 0 and box.x1 == width
    rect = inspected_rect(box, width, height)
    assert rect.area_px == width * height


def test_frame_area_scales_mask_pixels_by_the_pixels_each_covers() -> None:
    box = CropBox(x0=0.0, y0=0.0, x1=1130.0, y1=460.0, side_px=224)
    assert frame_area_px(224 * 224, box) == 1130 * 460
    assert frame_area_px(0, box) == 0
    assert frame_area_px(10, CropBox(0.0, 0.0, 448.0, 224.0, 224)) == 20


def test_a_frame_size_outside_the_gallerys_range_is_named_with_both_sizes() -> None:
    sizes = SizeRange(min_w=1130, max_w=1130, min_h=460, max_h=460)
    assert sizes.problem(1130, 460) is None
    low = round(1130 * (1 - FRAME_SIZE_TOLERANCE))
    assert sizes.problem(low, 460) is None and sizes.problem(low - 1, 460) is not None
    assert sizes.problem(640, 480) == (
        "frame size 640x480 px does not match the gallery's images (1130x460 px, +/-10%): another camera, "
        "resolution or product?"
    )
    varied = SizeRange(min_w=100, max_w=630, min_h=290, max_h=310)  # magnetic tile crops vary
    assert varied.problem(400, 300) is None
    assert "100-630x290-310 px" in str(varied.problem(20, 10))

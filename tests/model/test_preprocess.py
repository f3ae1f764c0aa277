"""Tests for preprocessing: squash vs letterbox geometry, channel handling, normalisation, read errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.model.preprocess import (
    ImageReadError,
    PreprocessSpec,
    crop_box,
    prepare_batch,
    read_image,
    resize_and_crop,
    to_bgr,
)

RESIZE_PX = 128
CROP_PX = 112
CONTENT_GRAY = 200  # any non-zero level: letterbox padding is black, so content is where pixels are non-zero
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORM_ATOL = 1e-6


def _spec(
    keep_aspect: bool,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> PreprocessSpec:
    return PreprocessSpec(RESIZE_PX, CROP_PX, keep_aspect, mean, std)


def _content_box(crop: np.ndarray) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) bounding box of non-zero pixels, derived from the pixels themselves."""
    ys, xs = np.nonzero(crop.max(axis=2))
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


@pytest.mark.parametrize("shape", [(100, 200), (200, 100), (90, 90), (300, 60)])
def test_squash_fills_the_whole_crop_and_reports_it_all_valid(shape: tuple[int, int]) -> None:
    image = np.full((*shape, 3), CONTENT_GRAY, np.uint8)
    crop, valid = resize_and_crop(image, _spec(keep_aspect=False))
    assert crop.shape == (CROP_PX, CROP_PX, 3) and crop.dtype == np.uint8
    assert valid == (0, CROP_PX, 0, CROP_PX)
    assert np.all(crop == CONTENT_GRAY)


@pytest.mark.parametrize("shape", [(100, 200), (200, 100), (64, 256), (250, 120)])
def test_letterbox_valid_box_matches_the_non_black_content_for_non_square_input(
    shape: tuple[int, int],
) -> None:
    image = np.full((*shape, 3), CONTENT_GRAY, np.uint8)
    crop, valid = resize_and_crop(image, _spec(keep_aspect=True))
    assert crop.shape == (CROP_PX, CROP_PX, 3)
    assert valid == _content_box(crop)
    y0, y1, x0, x1 = valid
    inside = np.zeros(crop.shape[:2], bool)
    inside[y0:y1, x0:x1] = True
    assert np.all(crop[inside] == CONTENT_GRAY)
    assert np.all(crop[~inside] == 0)
    # The longer side spans the whole resized square, so the content touches both crop edges along it.
    h, w = shape
    if w > h:
        assert (x0, x1) == (0, CROP_PX) and y1 - y0 < CROP_PX
    else:
        assert (y0, y1) == (0, CROP_PX) and x1 - x0 < CROP_PX


def test_letterbox_keeps_the_aspect_ratio_of_a_drawn_square() -> None:
    image = np.zeros((100, 200, 3), np.uint8)
    image[30:70, 80:120] = CONTENT_GRAY  # a 40x40 square at the centre
    crop, _ = resize_and_crop(image, _spec(keep_aspect=True))
    y0, y1, x0, x1 = _content_box(crop)
    assert abs((y1 - y0) - (x1 - x0)) <= 1
    squashed, _ = resize_and_crop(image, _spec(keep_aspect=False))
    sy0, sy1, sx0, sx1 = _content_box(squashed)
    assert (sy1 - sy0) > 1.5 * (sx1 - sx0)  # squash stretches the 2:1 image's square vertically


@pytest.mark.parametrize(
    "image",
    [
        np.arange(60 * 80, dtype=np.uint32).reshape(60, 80).astype(np.uint8),
        np.arange(60 * 80, dtype=np.uint32).reshape(60, 80, 1).astype(np.uint8),
    ],
    ids=["HxW", "HxWx1"],
)
def test_grayscale_becomes_three_equal_channels(image: np.ndarray) -> None:
    bgr = to_bgr(image)
    assert bgr.shape == (60, 80, 3)
    for c in range(3):
        assert np.array_equal(bgr[:, :, c], image.reshape(60, 80))
    prepared = prepare_batch([image], _spec(keep_aspect=False, mean=(0.0,) * 3, std=(1.0,) * 3))
    t = prepared.tensor[0]
    assert t.shape == (3, CROP_PX, CROP_PX)
    assert bool((t[0] == t[1]).all()) and bool((t[1] == t[2]).all())


def test_bgra_drops_alpha_and_other_dtypes_or_shapes_are_refused() -> None:
    bgra = np.zeros((10, 10, 4), np.uint8)
    bgra[..., 0], bgra[..., 3] = 7, 255
    assert np.array_equal(to_bgr(bgra), bgra[..., :3])
    with pytest.raises(ValueError, match="uint8"):
        to_bgr(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        to_bgr(np.zeros((10, 10, 2), np.uint8))


def test_normalisation_is_rgb_order_scaled_to_unit_then_mean_std() -> None:
    bgr_levels = (10, 128, 250)  # B, G, R
    image = np.empty((50, 70, 3), np.uint8)
    image[...] = bgr_levels
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 0.125)
    t = prepare_batch([image, image], _spec(keep_aspect=False, mean=mean, std=std)).tensor
    assert t.shape == (2, 3, CROP_PX, CROP_PX)
    rgb_levels = bgr_levels[::-1]
    for c in range(3):
        expected = (rgb_levels[c] / 255.0 - mean[c]) / std[c]
        assert np.allclose(t[:, c].numpy(), expected, atol=NORM_ATOL), c


def test_prepare_batch_keeps_crops_and_per_image_valid_boxes() -> None:
    wide = np.full((50, 100, 3), CONTENT_GRAY, np.uint8)
    square = np.full((80, 80), 90, np.uint8)
    prepared = prepare_batch([wide, square], _spec(keep_aspect=True))
    assert prepared.crops.shape == (2, CROP_PX, CROP_PX, 3)
    assert prepared.valid[0] == _content_box(prepared.crops[0])
    assert prepared.valid[1] == (0, CROP_PX, 0, CROP_PX)
    with pytest.raises(ValueError, match="at least one image"):
        prepare_batch([], _spec(keep_aspect=False))


def test_read_image_returns_bgr_for_colour_and_three_channels_for_gray(tmp_path: Path) -> None:
    colour = np.zeros((20, 30, 3), np.uint8)
    colour[..., 2] = 255  # pure red in BGR
    gray = np.full((20, 30), 77, np.uint8)
    cv2.imwrite(str(tmp_path / "c.png"), colour)
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    assert np.array_equal(read_image(tmp_path / "c.png"), colour)
    g = read_image(tmp_path / "g.png")
    assert g.shape == (20, 30, 3) and np.all(g == 77)


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("missing.png", None, "not found"),
        ("garbage.png", b"this is not an image at all", "not a decodable image"),
        ("empty.png", b"", "not a decodable image"),
    ],
)
def test_read_image_errors_name_the_file(
    tmp_path: Path, name: str, content: bytes | None, reason: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert str(path) in str(info.value) and reason in str(info.value)
    assert "\n" not in str(info.value)


SPOT_PX = 6  # side of the bright square whose position is followed through resize and crop
SPOT_TOLERANCE_CROP_PX = 1.0  # centroids agree within one crop pixel


@pytest.mark.parametrize("keep_aspect", [False, True])
@pytest.mark.parametrize(
    ("shape", "spot"), [((100, 200), (40, 150)), ((240, 120), (100, 30)), ((128, 128), (60, 70))]
)
def test_crop_box_puts_a_frame_spot_where_resize_and_crop_draws_it(
    keep_aspect: bool, shape: tuple[int, int], spot: tuple[int, int]
) -> None:
    spec = _spec(keep_aspect)
    image = np.zeros((*shape, 3), np.uint8)
    y, x = spot
    image[y : y + SPOT_PX, x : x + SPOT_PX] = 255
    crop, _ = resize_and_crop(image, spec)
    box = crop_box(*shape, spec)
    weights = crop.max(axis=2).astype(np.float64)
    ys, xs = np.indices(weights.shape)
    u, v = (xs * weights).sum() / weights.sum() + 0.5, (ys * weights).sum() / weights.sum() + 0.5
    fx, fy = box.to_frame(u, v)
    per_crop_px = (box.x1 - box.x0) / box.side_px
    assert abs(fx - (x + SPOT_PX / 2)) <= SPOT_TOLERANCE_CROP_PX * per_crop_px
    assert abs(fy - (y + SPOT_PX / 2)) <= SPOT_TOLERANCE_CROP_PX * per_crop_px


def test_crop_box_of_a_letterboxed_wide_image_reaches_outside_the_frame_vertically() -> None:
    # 100 x 200 into 128: scaled 64 x 128 at top 32; the crop starts 8 canvas pixels in.
    box = crop_box(100, 200, _spec(keep_aspect=True))
    assert (box.x0, box.x1) == pytest.approx((8 * 200 / 128, 120 * 200 / 128))
    assert (box.y0, box.y1) == pytest.approx(((8 - 32) * 100 / 64, (120 - 32) * 100 / 64))
    assert box.side_px == CROP_PX


def test_prepare_batch_gives_each_image_its_crop_box() -> None:
    images = [np.zeros((100, 200, 3), np.uint8), np.zeros((64, 64, 3), np.uint8)]
    prepared = prepare_batch(images, _spec(keep_aspect=False))
    spec = _spec(keep_aspect=False)
    assert prepared.boxes == [crop_box(100, 200, spec), crop_box(64, 64, spec)]

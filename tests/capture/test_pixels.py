"""Tests for inspector.capture.pixels: every GenICam pixel format the camera process converts, against known pictures."""

from __future__ import annotations

import numpy as np
import pytest

from inspector.capture.pixels import CONVERTIBLE, PixelFormatError, bytes_per_pixel, to_bgr

H, W = 6, 8
BGR = (10, 60, 200)  # a reddish colour
BAYER_LAYOUTS = {"BayerRG8": "RGGB", "BayerGR8": "GRBG", "BayerGB8": "GBRG", "BayerBG8": "BGGR"}


def mosaic(layout: str) -> bytes:
    """A uniform BGR colour as the sensor with this 2x2 colour layout (first row, then second) records it."""
    value = {"B": BGR[0], "G": BGR[1], "R": BGR[2]}
    raw = np.zeros((H, W), np.uint8)
    for dy in range(2):
        for dx in range(2):
            raw[dy::2, dx::2] = value[layout[dy * 2 + dx]]
    return raw.tobytes()


@pytest.mark.parametrize("pixel_format", sorted(BAYER_LAYOUTS))
def test_each_bayer_layout_is_demosaiced_to_the_colour_the_sensor_saw(pixel_format: str) -> None:
    image = to_bgr(mosaic(BAYER_LAYOUTS[pixel_format]), W, H, pixel_format)
    assert image.shape == (H, W, 3) and image.dtype == np.uint8 and image.flags.c_contiguous
    assert tuple(image[H // 2, W // 2]) == BGR  # inside the picture, away from the interpolated border


def test_rgb_and_bgr_buffers_keep_their_colours() -> None:
    bgr = np.zeros((H, W, 3), np.uint8)
    bgr[:] = BGR
    assert tuple(to_bgr(bgr[:, :, ::-1].tobytes(), W, H, "RGB8")[0, 0]) == BGR
    assert tuple(to_bgr(bgr.tobytes(), W, H, "BGR8")[0, 0]) == BGR


@pytest.mark.parametrize(("pixel_format", "bits"), [("Mono10", 10), ("Mono12", 12), ("Mono16", 16)])
def test_deep_mono_keeps_its_top_eight_bits_in_every_channel(pixel_format: str, bits: int) -> None:
    levels = np.arange(H * W, dtype=np.uint16).reshape(H, W) * ((1 << bits) // (H * W))
    image = to_bgr(levels.astype("<u2").tobytes(), W, H, pixel_format)
    expected = (levels >> (bits - 8)).astype(np.uint8)
    assert all(np.array_equal(image[:, :, c], expected) for c in range(3))


def test_mono8_becomes_grey_bgr_and_row_padding_is_cut_off() -> None:
    grey = np.arange(H * W, dtype=np.uint8).reshape(H, W)
    padded = np.concatenate([grey, np.full((H, 4), 255, np.uint8)], axis=1)  # 4 padding bytes per row
    image = to_bgr(padded.tobytes(), W, H, "Mono8")
    assert image.shape == (H, W, 3) and np.array_equal(image[:, :, 1], grey)


def test_a_short_buffer_or_an_unknown_format_is_an_error_naming_it() -> None:
    with pytest.raises(PixelFormatError, match="cannot hold 8x6 pixels"):
        to_bgr(b"\0" * (H * W - 1), W, H, "Mono8")
    with pytest.raises(PixelFormatError, match="YUV422_8 is not converted"):
        to_bgr(b"\0" * (H * W * 2), W, H, "YUV422_8")
    assert {bytes_per_pixel(f) for f in CONVERTIBLE} == {1, 2, 3}

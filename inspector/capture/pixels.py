"""GenICam pixel formats (Mono, Bayer, RGB) converted to the BGR uint8 frames the rest of the daemon scores."""

from __future__ import annotations

import cv2
import numpy as np

from inspector.core.records import Image

# OpenCV names a Bayer pattern by the 2x2 block at its second row and column, GenICam (PFNC) by the first:
# a BayerRG8 sensor (R G / G B) is OpenCV's BayerBG.
_BAYER_TO_BGR = {
    "BayerRG8": cv2.COLOR_BayerBG2BGR,
    "BayerGR8": cv2.COLOR_BayerGB2BGR,
    "BayerGB8": cv2.COLOR_BayerGR2BGR,
    "BayerBG8": cv2.COLOR_BayerRG2BGR,
}
_MONO_BITS = {
    "Mono8": 8,
    "Mono10": 10,
    "Mono12": 12,
    "Mono16": 16,
}  # 10..16: one little-endian uint16 a pixel
_COLOUR = {"RGB8": cv2.COLOR_RGB2BGR, "BGR8": None}
CONVERTIBLE = frozenset((*_BAYER_TO_BGR, *_MONO_BITS, *_COLOUR))


class PixelFormatError(ValueError):
    """A buffer that cannot be a frame: a format not converted here, or a size that does not add up."""


def bytes_per_pixel(pixel_format: str) -> int:
    """Bytes one pixel takes in a buffer of this format.

    Raises:
        PixelFormatError: a format not converted here.
    """
    if pixel_format in _BAYER_TO_BGR or pixel_format == "Mono8":
        return 1
    if pixel_format in _MONO_BITS:
        return 2
    if pixel_format in _COLOUR:
        return 3
    raise PixelFormatError(
        f"pixel format {pixel_format} is not converted (use one of {', '.join(sorted(CONVERTIBLE))})"
    )


def _rows(data: bytes, width: int, height: int, pixel_bytes: int) -> np.ndarray:
    """The buffer as ``height`` rows of ``width * pixel_bytes`` bytes (row padding at the end cut off)."""
    row_bytes = width * pixel_bytes
    if width <= 0 or height <= 0 or len(data) < row_bytes * height:
        raise PixelFormatError(
            f"{len(data)} bytes cannot hold {width}x{height} pixels of {pixel_bytes} bytes"
        )
    stride = len(data) // height
    flat = np.frombuffer(data, np.uint8, count=stride * height)
    return flat.reshape(height, stride)[:, :row_bytes]


def to_bgr(data: bytes, width: int, height: int, pixel_format: str) -> Image:
    """A camera buffer as a contiguous HxWx3 uint8 BGR image.

    Mono formats deeper than 8 bits keep their top 8 bits; Bayer mosaics are demosaiced bilinearly.

    Raises:
        PixelFormatError: an unknown format, or a buffer too small for its size.
    """
    pixel_bytes = bytes_per_pixel(pixel_format)
    rows = _rows(data, width, height, pixel_bytes)
    if pixel_format in _MONO_BITS:
        if pixel_bytes == 1:
            grey = rows
        else:
            wide = np.ascontiguousarray(rows).view("<u2")
            grey = (wide >> (_MONO_BITS[pixel_format] - 8)).clip(0, 255).astype(np.uint8)
        return np.ascontiguousarray(cv2.cvtColor(np.ascontiguousarray(grey), cv2.COLOR_GRAY2BGR))
    if pixel_format in _BAYER_TO_BGR:
        return np.ascontiguousarray(cv2.cvtColor(np.ascontiguousarray(rows), _BAYER_TO_BGR[pixel_format]))
    colour = np.ascontiguousarray(rows).reshape(height, width, 3)
    code = _COLOUR[pixel_format]
    return np.ascontiguousarray(colour if code is None else cv2.cvtColor(colour, code))

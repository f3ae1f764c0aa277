"""Image preprocessing shared by gallery building and live scoring: resize, centre crop, normalise."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from inspector.core.errors import InspectorError
from inspector.core.names import IMAGE_SUFFIXES
from inspector.core.records import CropBox

U8_MAX = 255.0


@dataclass(frozen=True)
class PreprocessSpec:
    """How a raw image becomes a network input; a gallery and a live frame always use the same one.

    Attributes:
        resize_px: side of the square the image is resized into (paper: 256).
        crop_px: side of the centre crop fed to the network (paper: 224).
        keep_aspect: letterbox (scale the longer side to resize_px, pad with black) instead of squashing.
        mean: per-channel RGB mean on the [0, 1] scale.
        std: per-channel RGB std on the [0, 1] scale.
    """

    resize_px: int
    crop_px: int
    keep_aspect: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@dataclass(frozen=True)
class Prepared:
    """A batch ready for the network.

    Attributes:
        tensor: float32 [B, 3, crop, crop], normalised.
        crops: the uint8 BGR crops [B, crop, crop, 3] (for overlays and reports).
        valid: per image (y0, y1, x0, x1) of real image content inside the crop (letterbox padding excluded).
        boxes: per image, where its crop lies in the original image (see :func:`crop_box`).
    """

    tensor: torch.Tensor
    crops: np.ndarray
    valid: list[tuple[int, int, int, int]]
    boxes: list[CropBox]


class ImageReadError(InspectorError):
    """An image file that cannot be decoded."""


class ImageShapeError(InspectorError, ValueError):
    """An array that is not an image the model can take: not uint8, no pixels, or not 1, 3 or 4 channels."""


def read_image(path: Path) -> np.ndarray:
    """Read an image file as 3-channel BGR uint8 (grayscale is replicated to 3 channels).

    Raises:
        ImageReadError: the file is missing or is not an image OpenCV can decode (the message names it).
    """
    if Path(path).is_dir():
        raise ImageReadError(f"{path}: a folder without images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    data = np.fromfile(str(path), dtype=np.uint8) if Path(path).is_file() else None
    if data is None:
        raise ImageReadError(f"{path}: file not found")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ImageReadError(f"{path}: not a decodable image")
    return np.ascontiguousarray(image)


def to_bgr(image: np.ndarray) -> np.ndarray:
    """Return a 3-channel BGR uint8 view of a gray, BGR or BGRA uint8 image.

    Raises:
        ImageShapeError: not uint8, no pixels, or a shape that is not HxW, HxWx1, HxWx3 or HxWx4.
    """
    if image.dtype != np.uint8:
        raise ImageShapeError(f"image must be uint8, got {image.dtype}")
    if image.ndim not in (2, 3) or image.shape[0] < 1 or image.shape[1] < 1:
        raise ImageShapeError(f"unsupported image shape {image.shape}: expected HxW or HxWxC with pixels")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ImageShapeError(f"unsupported image shape {image.shape}: expected 1, 3 or 4 channels")


def _layout(height: int, width: int, spec: PreprocessSpec) -> tuple[int, int, int, int]:
    """(resized height, resized width, top, left) of the image on the resize_px square canvas."""
    r = spec.resize_px
    if not spec.keep_aspect:
        return r, r, 0, 0
    scale = r / max(height, width)
    nh, nw = max(1, round(height * scale)), max(1, round(width * scale))
    return nh, nw, (r - nh) // 2, (r - nw) // 2


def crop_box(height: int, width: int, spec: PreprocessSpec) -> CropBox:
    """Where the crop of a ``height`` x ``width`` image lies in that image, in its pixels.

    The image is scaled to (nh, nw) and placed at (top, left) on the canvas; the crop starts ``off`` canvas
    pixels in. A canvas pixel p on the x axis is image x = (p - left) * width / nw (OpenCV resizes map pixel
    edges linearly), so the crop's edges 0 and crop_px land at the box's x0 and x1.
    """
    nh, nw, top, left = _layout(height, width, spec)
    off = (spec.resize_px - spec.crop_px) // 2
    c = spec.crop_px
    sx, sy = width / nw, height / nh
    return CropBox(
        x0=(off - left) * sx,
        y0=(off - top) * sy,
        x1=(off + c - left) * sx,
        y1=(off + c - top) * sy,
        side_px=c,
    )


def resize_and_crop(image: np.ndarray, spec: PreprocessSpec) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Resize (squash or letterbox) to resize_px, then take the centre crop_px square.

    Returns:
        The BGR crop and the (y0, y1, x0, x1) box of real image content inside it.
    """
    image = to_bgr(image)
    h, w = image.shape[:2]
    r = spec.resize_px
    nh, nw, top, left = _layout(h, w, spec)
    if spec.keep_aspect:
        interp = cv2.INTER_AREA if r < max(h, w) else cv2.INTER_LINEAR  # shrinking
        small = cv2.resize(image, (nw, nh), interpolation=interp)
        canvas = np.zeros((r, r, 3), np.uint8)
        canvas[top : top + nh, left : left + nw] = small
    else:
        interp = cv2.INTER_AREA if min(h, w) > r else cv2.INTER_LINEAR
        canvas = np.asarray(cv2.resize(image, (r, r), interpolation=interp), dtype=np.uint8)
    content = (top, top + nh, left, left + nw)
    off = (r - spec.crop_px) // 2
    c = spec.crop_px
    crop = np.ascontiguousarray(canvas[off : off + c, off : off + c])
    y0, y1 = max(content[0] - off, 0), min(content[1] - off, c)
    x0, x1 = max(content[2] - off, 0), min(content[3] - off, c)
    return crop, (y0, max(y1, y0), x0, max(x1, x0))


def prepare_batch(images: list[np.ndarray], spec: PreprocessSpec) -> Prepared:
    """Preprocess a batch of uint8 images (gray or BGR) into a normalised network input."""
    if not images:
        raise ValueError("prepare_batch needs at least one image")
    crops, valid = zip(*(resize_and_crop(im, spec) for im in images), strict=True)
    stack = np.stack(crops)  # [B, H, W, 3] BGR
    rgb = torch.from_numpy(stack[..., ::-1].copy()).permute(0, 3, 1, 2).float().div_(U8_MAX)
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1)
    boxes = [crop_box(im.shape[0], im.shape[1], spec) for im in images]
    return Prepared(tensor=(rgb - mean) / std, crops=stack, valid=list(valid), boxes=boxes)

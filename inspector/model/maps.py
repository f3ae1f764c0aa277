"""Anomaly maps as pictures: a heatmap blended over the crop, and the binary defect mask."""

from __future__ import annotations

import cv2
import numpy as np

HEATMAP_ALPHA = 0.5
MASK_ON = 255
U8_MAX = 255.0


def defect_mask(amap: np.ndarray, pixel_threshold: float) -> np.ndarray:
    """uint8 0/255 mask of the map's values above the pixel threshold."""
    return np.where(amap > pixel_threshold, MASK_ON, 0).astype(np.uint8)


def overlay_heatmap(image_bgr: np.ndarray, amap: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """Blend a JET-coloured anomaly map 50/50 over an image.

    Args:
        image_bgr: [H,W,3] uint8 BGR image.
        amap: [h,w] anomaly map; resized (bilinear) to the image size when it differs.
        vmin: map value drawn as the coldest colour (values below are clipped).
        vmax: map value drawn as the hottest colour (values above are clipped).

    Returns:
        [H,W,3] uint8 BGR overlay.

    Raises:
        ValueError: on a non-uint8/non-3-channel image, a non-2-D map or vmax <= vmin.
    """
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
        raise ValueError(
            f"overlay_heatmap: image_bgr must be uint8 [H,W,3], got {image_bgr.dtype} {image_bgr.shape}"
        )
    if amap.ndim != 2:
        raise ValueError(f"overlay_heatmap: amap must be 2-D, got shape {amap.shape}")
    if not vmax > vmin:
        raise ValueError(f"overlay_heatmap: vmax ({vmax}) must be greater than vmin ({vmin})")
    height, width = image_bgr.shape[:2]
    scaled = np.asarray(amap, dtype=np.float32)
    if scaled.shape != (height, width):
        scaled = np.asarray(cv2.resize(scaled, (width, height), interpolation=cv2.INTER_LINEAR), np.float32)
    unit = np.clip((scaled - vmin) / (vmax - vmin), 0.0, 1.0)
    colored = cv2.applyColorMap((unit * U8_MAX).round().astype(np.uint8), cv2.COLORMAP_JET)
    blended: np.ndarray = cv2.addWeighted(image_bgr, 1.0 - HEATMAP_ALPHA, colored, HEATMAP_ALPHA, 0.0)
    return blended

"""Anomaly maps as pictures: a heatmap over the crop or the whole frame, the binary mask, crop-to-frame mapping."""

from __future__ import annotations

import cv2
import numpy as np

from inspector.core.records import CropBox

HEATMAP_ALPHA = 0.5
MASK_ON = 255
U8_MAX = 255.0
MAP_FULL_SCALE_X_THRESHOLD = 2.0  # colour scale: 0 .. 2x the pixel threshold (threshold at mid-scale)
OUTLINE_BGR = (255, 255, 255)  # defect contours and the crop's edge on a frame overlay
REGION_BGR = (0, 255, 255)  # the inspection region's edge on a frame overlay (yellow)
OUTLINE_PX = 1


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


def crop_to_frame(
    image: np.ndarray, box: CropBox, frame_hw: tuple[int, int], interpolation: int = cv2.INTER_NEAREST
) -> np.ndarray:
    """An image in crop coordinates (map, mask) drawn into the frame's coordinates; 0 outside the crop.

    Crop pixel centre u lies at frame x = x0 + (u + 0.5) * (x1 - x0) / side - 0.5 (pixel centres), the
    affine map given to OpenCV.

    Args:
        image: 2-D array of the crop's size (uint8 mask or float32 map).
        box: where the crop lies in the frame.
        frame_hw: (height, width) of the frame.
        interpolation: cv2.INTER_NEAREST for masks (values kept), cv2.INTER_LINEAR for maps.
    """
    if image.ndim != 2 or image.shape != (box.side_px, box.side_px):
        raise ValueError(f"crop_to_frame: expected a {box.side_px}x{box.side_px} image, got {image.shape}")
    sx = (box.x1 - box.x0) / box.side_px
    sy = (box.y1 - box.y0) / box.side_px
    matrix = np.array(
        [[sx, 0.0, box.x0 + 0.5 * sx - 0.5], [0.0, sy, box.y0 + 0.5 * sy - 0.5]], dtype=np.float64
    )
    height, width = frame_hw
    warped: np.ndarray = cv2.warpAffine(
        image, matrix, (width, height), flags=interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    return warped


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) pixel bounds of a mask's set pixels (x1, y1 exclusive); None when empty."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def frame_overlay(
    frame_bgr: np.ndarray,
    amap: np.ndarray,
    box: CropBox,
    pixel_threshold: float,
    mask: np.ndarray | None = None,
    region: np.ndarray | None = None,
) -> np.ndarray:
    """The whole camera frame with the anomaly map blended over the part the model saw.

    The colour scale runs from 0 to ``MAP_FULL_SCALE_X_THRESHOLD`` times the pixel threshold, and so does the
    opacity (0 to ``HEATMAP_ALPHA``), so a part's normal surface shows through; the crop's edge, the
    inspection region's edge (``region``: uint8 0/255 in crop coordinates, drawn in ``REGION_BGR``) and the
    outline of the defect mask (when given) are drawn on top.
    """
    height, width = frame_bgr.shape[:2]
    full_scale = max(pixel_threshold * MAP_FULL_SCALE_X_THRESHOLD, 1e-12)
    warped = crop_to_frame(np.asarray(amap, np.float32), box, (height, width), cv2.INTER_LINEAR)
    inside = crop_to_frame(np.full(amap.shape, MASK_ON, np.uint8), box, (height, width)) > 0
    unit = np.clip(warped / full_scale, 0.0, 1.0)
    colored = cv2.applyColorMap((unit * U8_MAX).round().astype(np.uint8), cv2.COLORMAP_JET)
    # Opacity grows with the map: normal surface stays visible, anomalies stand out (half opaque at 2x).
    alpha = (HEATMAP_ALPHA * unit * inside)[..., None]
    out = (frame_bgr * (1.0 - alpha) + colored * alpha).round().astype(np.uint8)
    if region is not None:
        edge, _ = cv2.findContours(
            crop_to_frame(region, box, (height, width)), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE
        )
        cv2.drawContours(out, edge, -1, REGION_BGR, OUTLINE_PX)
    if mask is not None:
        in_frame = crop_to_frame(mask, box, (height, width))
        contours, _ = cv2.findContours(in_frame, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, OUTLINE_BGR, OUTLINE_PX)
    top_left = (max(0, round(box.x0)), max(0, round(box.y0)))
    bottom_right = (min(width, round(box.x1)) - 1, min(height, round(box.y1)) - 1)
    cv2.rectangle(out, top_left, bottom_right, OUTLINE_BGR, OUTLINE_PX)
    return out

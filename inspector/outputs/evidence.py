"""The evidence of one verdict: its images (frame, overlay, masks) and the JSON that explains them.

The archive writes these files and the results endpoint serves them, from memory or from the archive; both
take them from here, so a record on disk and a response from memory are the same bytes. A verdict without a
frame (an ERROR of a trigger no frame answered, of a file that could not be read) has evidence too: its
header and ``evidence.json`` with a frame size of 0 and no images.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from inspector.bus.wire import VerdictHeader
from inspector.core.names import Verdict
from inspector.core.records import CropBox, Outcome
from inspector.model.maps import crop_to_frame, frame_overlay, mask_bbox

EVIDENCE_VERSION = 2  # 2: frame_width/frame_height 0 and no images for a verdict without a frame
PNG_COMPRESSION_LEVEL = 1  # fast: evidence is written off the model's path, but on the same cores
HEADER_FILE = "header.json"
EVIDENCE_FILE = "evidence.json"
ImageName = Literal["frame.png", "overlay.jpg", "mask.png", "mask_frame.png"]
FRAME_IMAGES: tuple[ImageName, ...] = ("frame.png", "overlay.jpg")
MASK_IMAGES: tuple[ImageName, ...] = ("mask.png", "mask_frame.png")
IMAGE_NAMES: tuple[ImageName, ...] = (*FRAME_IMAGES, *MASK_IMAGES)
CONTENT_TYPES: dict[str, str] = {".png": "image/png", ".jpg": "image/jpeg"}
BoxPx = tuple[int, int, int, int]


class EvidenceError(ValueError):
    """An outcome that carries no published header, or an image that cannot be encoded."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class CropGeometry(_Model):
    """Where the model's crop lies in the camera frame (frame pixels, edges): see ``CropBox``."""

    x0: float
    y0: float
    x1: float
    y1: float
    side_px: int = Field(ge=1)


class DefectBoxes(_Model):
    """Bounds (x0, y0, x1, y1; x1, y1 exclusive) of the defect mask's pixels, in both coordinate systems."""

    crop: BoxPx | None = Field(description="In the model crop's pixels (mask.png).")
    frame: BoxPx | None = Field(description="In the camera frame's pixels (mask_frame.png, frame.png).")


class Evidence(_Model):
    """``evidence.json``: what the images are and what the verdict was computed against."""

    evidence: int = Field(
        default=EVIDENCE_VERSION,
        description=f"Version of this document; this build writes {EVIDENCE_VERSION} (2: a verdict without a "
        "frame has frame_width and frame_height 0 and no images).",
    )
    camera: str
    seq: int = Field(ge=0)
    boot_id: str
    verdict: Verdict
    captured_at: str
    part_id: str | None
    frame_width: int = Field(
        ge=0, description="The frame's width in pixels; 0 when the verdict has no frame."
    )
    frame_height: int = Field(
        ge=0, description="The frame's height in pixels; 0 when the verdict has no frame."
    )
    crop: CropGeometry | None = Field(description="The crop in frame coordinates (PASS/FAIL only).")
    pixel_threshold: float | None
    defect_boxes: DefectBoxes | None
    neighbours: list[str] = Field(description="Source names of the K nearest gallery images, nearest first.")
    images: list[ImageName] = Field(description="Image files of this record.")


def published_header(outcome: Outcome) -> VerdictHeader:
    """The header the bus sent for this outcome, parsed with the bus's own model.

    Raises:
        EvidenceError: the outcome was not published (no header to show).
    """
    if outcome.published is None:
        raise EvidenceError(f"camera {outcome.camera} seq {outcome.seq}: no published header")
    return VerdictHeader.model_validate_json(outcome.published)


def has_frame(outcome: Outcome) -> bool:
    """True when the outcome carries a picture (not the empty image of a fault frame)."""
    return outcome.frame.image.size > 0


def images_of(outcome: Outcome) -> tuple[ImageName, ...]:
    """The images an outcome has: none without a frame; frame and overlay; the masks too when it was scored."""
    if not has_frame(outcome):
        return ()
    has_mask = outcome.mask is not None and outcome.crop_box is not None
    return IMAGE_NAMES if has_mask else FRAME_IMAGES


def evidence_of(outcome: Outcome, header: VerdictHeader) -> Evidence:
    """The evidence document of a published outcome."""
    height, width = outcome.frame.image.shape[:2]
    box = outcome.crop_box
    boxes = None
    if outcome.mask is not None and box is not None:
        boxes = DefectBoxes(
            crop=mask_bbox(outcome.mask), frame=mask_bbox(crop_to_frame(outcome.mask, box, (height, width)))
        )
    return Evidence(
        camera=header.camera,
        seq=header.seq,
        boot_id=header.boot_id,
        verdict=header.verdict,
        captured_at=header.captured_at,
        part_id=header.part_id,
        frame_width=width,
        frame_height=height,
        crop=_geometry(box),
        pixel_threshold=outcome.pixel_threshold,
        defect_boxes=boxes,
        neighbours=list(outcome.neighbours),
        images=list(images_of(outcome)),
    )


def _geometry(box: CropBox | None) -> CropGeometry | None:
    if box is None:
        return None
    return CropGeometry(x0=box.x0, y0=box.y0, x1=box.x1, y1=box.y1, side_px=box.side_px)


def render(outcome: Outcome, name: ImageName, jpeg_quality: int) -> bytes:
    """One image of the outcome, encoded.

    Raises:
        EvidenceError: the outcome has no such image (no frame at all, or no mask), or OpenCV cannot encode it.
    """
    frame = outcome.frame.image
    if not has_frame(outcome):
        raise EvidenceError(f"camera {outcome.camera} seq {outcome.seq}: {outcome.verdict} has no frame")
    if name == "frame.png":
        return _encode(".png", frame)
    if name == "overlay.jpg":
        return overlay_jpeg(outcome, jpeg_quality)
    mask, box = outcome.mask, outcome.crop_box
    if mask is None or box is None:
        raise EvidenceError(f"camera {outcome.camera} seq {outcome.seq}: {outcome.verdict} has no {name}")
    if name == "mask.png":
        return _encode(".png", mask)
    return _encode(".png", crop_to_frame(mask, box, frame.shape[:2]))


def overlay_of(outcome: Outcome, max_width_px: int | None = None) -> np.ndarray:
    """The frame with the heatmap over the crop and the defect outlined; the plain frame when not scored.

    With ``max_width_px`` a wider frame is scaled down first (the live view's pictures: a quarter of the
    pixels of a 1920 px frame at 960 px, and a quarter of the work).
    """
    frame = outcome.frame.image
    amap, box, threshold = outcome.anomaly_map, outcome.crop_box, outcome.pixel_threshold
    if max_width_px is not None and frame.shape[1] > max_width_px:
        scale = max_width_px / frame.shape[1]
        size = (max_width_px, max(1, round(frame.shape[0] * scale)))
        frame = np.asarray(cv2.resize(frame, size, interpolation=cv2.INTER_AREA), np.uint8)
        if box is not None:
            box = CropBox(box.x0 * scale, box.y0 * scale, box.x1 * scale, box.y1 * scale, box.side_px)
    if amap is None or box is None or threshold is None:
        return frame
    return frame_overlay(frame, amap, box, threshold, outcome.mask)


def overlay_jpeg(outcome: Outcome, jpeg_quality: int, max_width_px: int | None = None) -> bytes:
    """:func:`overlay_of` as a JPEG."""
    return _encode(".jpg", overlay_of(outcome, max_width_px), jpeg_quality)


def content_type(name: str) -> str:
    """The MIME type of an evidence file name."""
    return CONTENT_TYPES.get(name[name.rfind(".") :], "application/octet-stream")


def _encode(suffix: str, image: np.ndarray, jpeg_quality: int = 90) -> bytes:
    params = (
        [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality]
        if suffix == ".jpg"
        else [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION_LEVEL]
    )
    ok, buf = cv2.imencode(suffix, image, params)
    if not ok:
        raise EvidenceError(f"OpenCV could not encode a {suffix} of shape {image.shape}")
    return buf.tobytes()

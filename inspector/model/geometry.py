"""What of a frame is inspected: the inspected rectangle in frame pixels, and frame sizes a gallery accepts."""

from __future__ import annotations

from dataclasses import dataclass

from inspector.core.records import CropBox
from inspector.model.manifest import GalleryManifest
from inspector.model.preprocess import PreprocessSpec, crop_box

FRAME_SIZE_TOLERANCE = (
    0.10  # a frame may be this fraction smaller or larger than the gallery's images, per side
)


@dataclass(frozen=True)
class Rect:
    """A rectangle of frame pixels, ``[x0, x1) x [y0, y1)`` (integer edges)."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def area_px(self) -> int:
        """Pixels inside."""
        return max(0, self.x1 - self.x0) * max(0, self.y1 - self.y0)


def inspected_rect(box: CropBox, width: int, height: int) -> Rect:
    """The part of a ``width`` x ``height`` frame the model sees: the crop box clipped to the frame (letterbox
    padding lies outside the frame and is never inspected)."""
    return Rect(
        max(0, round(box.x0)), max(0, round(box.y0)), min(width, round(box.x1)), min(height, round(box.y1))
    )


def describe(box: CropBox, width: int, height: int) -> str:
    """One line an engineer reads: ``whole frame 1130x460`` or the inspected rectangle and what it leaves."""
    r = inspected_rect(box, width, height)
    if (r.x0, r.y0, r.x1, r.y1) == (0, 0, width, height):
        return f"whole frame {width}x{height}"
    left, right, top, bottom = r.x0, width - r.x1, r.y0, height - r.y1
    return (
        f"x {r.x0}-{r.x1}, y {r.y0}-{r.y1} of {width}x{height} ({r.area_px / (width * height):.0%} of the "
        f"frame; never inspected: {left} px left, {right} right, {top} top, {bottom} bottom)"
    )


def frame_area_px(mask_pixels: int, box: CropBox) -> int:
    """Frame pixels covered by ``mask_pixels`` pixels of the model's crop (each crop pixel covers a fixed
    rectangle of the frame: squash and letterbox scale each axis linearly)."""
    scale = (box.x1 - box.x0) / box.side_px * (box.y1 - box.y0) / box.side_px
    return round(mask_pixels * scale)


def gallery_sizes(manifest: GalleryManifest) -> list[tuple[int, int]]:
    """The (width, height) of the gallery's source images, where recorded (galleries built since sizes are)."""
    return [
        (s.width_px, s.height_px)
        for s in manifest.sources
        if s.width_px is not None and s.height_px is not None
    ]


@dataclass(frozen=True)
class SizeRange:
    """Frame sizes a gallery accepts: its images' range of widths and heights, widened by the tolerance."""

    min_w: int
    max_w: int
    min_h: int
    max_h: int
    tolerance: float = FRAME_SIZE_TOLERANCE

    @classmethod
    def of(cls, manifest: GalleryManifest, tolerance: float = FRAME_SIZE_TOLERANCE) -> SizeRange | None:
        """The range of a gallery (None for one that records no sizes: no check)."""
        sizes = gallery_sizes(manifest)
        if not sizes:
            return None
        widths, heights = [w for w, _ in sizes], [h for _, h in sizes]
        return cls(min(widths), max(widths), min(heights), max(heights), tolerance)

    def _side(self, low: int, high: int) -> str:
        return f"{low}" if low == high else f"{low}-{high}"

    def problem(self, width: int, height: int) -> str | None:
        """Why a frame of this size does not fit the gallery, naming both sizes (None when it fits)."""
        t = self.tolerance
        fits_w = self.min_w * (1 - t) <= width <= self.max_w * (1 + t)
        fits_h = self.min_h * (1 - t) <= height <= self.max_h * (1 + t)
        if fits_w and fits_h:
            return None
        gallery = f"{self._side(self.min_w, self.max_w)}x{self._side(self.min_h, self.max_h)}"
        return (
            f"frame size {width}x{height} px does not match the gallery's images ({gallery} px, +/-{t:.0%}): "
            "another camera, resolution or product?"
        )


def typical_geometry(manifest: GalleryManifest) -> str | None:
    """``describe`` for the gallery's median image size (None when it records no sizes)."""
    sizes = sorted(gallery_sizes(manifest))
    if not sizes:
        return None
    width, height = sizes[len(sizes) // 2]
    p = manifest.preprocessing
    spec = PreprocessSpec(p.resize_px, p.crop_px, p.keep_aspect, p.mean, p.std)
    return describe(crop_box(height, width, spec), width, height)

"""The records a frame travels as: a captured ``Frame`` and the ``Outcome`` the model worker gives it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from inspector.core.names import Verdict

Image = npt.NDArray[np.uint8]
NO_IMAGE: Image = np.zeros((0, 0, 3), np.uint8)
"""The image of a frame that has a place in the sequence but no picture (see ``Frame.fault``)."""


@dataclass(frozen=True, eq=False)
class Frame:
    """One item of a camera's sequence: ``seq`` counts per camera from 0; a gap means frames were dropped.

    A frame with a ``fault`` has a place in the sequence but nothing to score (a trigger no frame answered,
    a file that could not be read): it ends in an ERROR verdict giving that reason.
    """

    camera: str
    seq: int
    captured_at: float  # wall clock (injected clock), seconds
    monotonic_at: float  # time.monotonic() in the camera process, seconds
    image: Image  # BGR uint8, HxWx3 (NO_IMAGE when fault is set)
    part_id: str | None = None  # from the trigger, or a folder source's file stem
    product: str | None = None  # the product (gallery) the frame is scored with, stamped as it enters
    fault: str | None = None  # why there is nothing to score
    frame_id: str | None = None  # the camera's own id of the frame (GenICam block id), when it gives one
    camera_timestamp_ns: int | None = None  # the camera's clock when it took the frame (GenICam)
    trigger_seq: int | None = None  # the trigger whose software trigger took this frame (GenICam)


@dataclass(frozen=True)
class CropBox:
    """Where the model's square crop lies in the camera frame, in frame pixels (edges, not centres).

    The crop's ``side_px`` x ``side_px`` pixels cover the rectangle ``[x0, x1) x [y0, y1)`` of the frame
    linearly (squash and letterbox are both a scale and a shift per axis). With letterbox padding the
    rectangle reaches outside the frame; those crop pixels saw no camera content.
    """

    x0: float
    y0: float
    x1: float
    y1: float
    side_px: int

    def to_frame(self, x_crop: float, y_crop: float) -> tuple[float, float]:
        """Frame coordinates of a point given in crop coordinates (both continuous, pixel edges)."""
        return (
            self.x0 + x_crop * (self.x1 - self.x0) / self.side_px,
            self.y0 + y_crop * (self.y1 - self.y0) / self.side_px,
        )


@dataclass(frozen=True, eq=False)
class Outcome:
    """What became of one frame: its verdict and the evidence for it, before any wire format.

    Attributes:
        frame: the frame.
        verdict: PASS or FAIL when scored; TIMEOUT or ERROR (with ``error``) when not.
        score: image anomaly score (PASS/FAIL only).
        threshold: the gallery's image threshold (PASS/REVIEW/FAIL only).
        review_threshold: the gallery's review threshold (PASS/REVIEW/FAIL of a gallery with a review band).
        defect_area_px: mask pixels set (PASS/FAIL only).
        gallery: content hash of the gallery that scored (or would have scored) the frame.
        anomaly_map: float32 map in model-input (crop) coordinates (PASS/FAIL only).
        mask: uint8 0/255 mask, ``anomaly_map`` above ``pixel_threshold`` (PASS/FAIL only).
        pixel_threshold: the gallery's pixel threshold (PASS/FAIL only).
        crop: the BGR crop the network saw (PASS/FAIL only).
        latency_ms: milliseconds per stage so far (see ``inspector.core.names.LATENCY_STAGES``).
        error: the reason, for TIMEOUT and ERROR only.
        crop_box: where ``crop`` (and so the map and mask) lies in the frame (PASS/FAIL only).
        neighbours: source names of the gallery images the map was computed against, nearest first.
        published: the verdict header exactly as the bus sent it (JSON), set by the bus sink; the outputs
            after the bus (archive, results, live view) store and serve this text.
    """

    frame: Frame
    verdict: Verdict
    score: float | None = None
    threshold: float | None = None
    review_threshold: float | None = None
    defect_area_px: int | None = None
    gallery: str | None = None
    anomaly_map: npt.NDArray[np.float32] | None = None
    mask: Image | None = None
    pixel_threshold: float | None = None
    crop: Image | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    crop_box: CropBox | None = None
    neighbours: tuple[str, ...] = ()
    published: str | None = None

    def __post_init__(self) -> None:
        """Refuse a record whose fields contradict its verdict."""
        if self.verdict in ("TIMEOUT", "ERROR"):
            if not self.error:
                raise ValueError(
                    f"camera {self.frame.camera} seq {self.frame.seq}: {self.verdict} needs a reason"
                )
        elif self.score is None or self.threshold is None or self.error is not None:
            raise ValueError(
                f"camera {self.frame.camera} seq {self.frame.seq}: {self.verdict} needs a score and a "
                "threshold and no error"
            )

    @property
    def camera(self) -> str:
        """The frame's camera."""
        return self.frame.camera

    @property
    def seq(self) -> int:
        """The frame's sequence number."""
        return self.frame.seq

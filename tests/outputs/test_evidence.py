"""Tests for inspector.outputs.evidence: the images and the document of one verdict."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from inspector.core.records import NO_IMAGE, Frame
from inspector.model.maps import MASK_ON, REGION_BGR, crop_to_frame, mask_bbox
from inspector.outputs.evidence import (
    EvidenceError,
    evidence_of,
    images_of,
    overlay_of,
    published_header,
    render,
)
from tests.support import ScoredLine, bus_outcome, decode_image, stamp_published


def test_evidence_maps_the_defect_box_from_the_crop_into_the_frame(scored_line: ScoredLine) -> None:
    outcome = next(o for o in scored_line.outcomes if o.verdict == "FAIL")
    assert outcome.mask is not None and outcome.crop_box is not None
    evidence = evidence_of(outcome, published_header(outcome))
    assert evidence.defect_boxes is not None and evidence.crop is not None
    assert evidence.defect_boxes.crop == mask_bbox(outcome.mask)
    in_frame = crop_to_frame(outcome.mask, outcome.crop_box, outcome.frame.image.shape[:2])
    assert evidence.defect_boxes.frame == mask_bbox(in_frame)
    crop_bounds = evidence.defect_boxes.crop
    assert crop_bounds is not None
    x0, y0, x1, y1 = crop_bounds
    fx0, fy0 = outcome.crop_box.to_frame(x0, y0)
    fx1, fy1 = outcome.crop_box.to_frame(x1, y1)
    frame_box = evidence.defect_boxes.frame
    assert frame_box is not None
    assert frame_box == pytest.approx((fx0, fy0, fx1, fy1), abs=2.0)  # nearest-pixel rounding at the edges
    assert images_of(outcome) == ("frame.png", "overlay.jpg", "mask.png", "mask_frame.png")


def test_overlay_is_the_frame_size_or_scaled_to_the_width_asked_for(scored_line: ScoredLine) -> None:
    outcome = scored_line.outcomes[-1]
    height, width = outcome.frame.image.shape[:2]
    assert overlay_of(outcome).shape == (height, width, 3)
    small = overlay_of(outcome, max_width_px=width // 2)
    assert small.shape == (height // 2, width // 2, 3)
    # Scaling first draws what scaling afterwards would show, within JPEG-free resampling noise.
    reference = cv2.resize(overlay_of(outcome), (width // 2, height // 2), interpolation=cv2.INTER_AREA)
    assert np.mean(np.abs(small.astype(int) - reference.astype(int))) < 12.0
    assert decode_image(render(outcome, "overlay.jpg", 90)).shape == (height, width, 3)


def test_an_unscored_or_unpublished_outcome_has_no_masks_and_no_header(scored_line: ScoredLine) -> None:
    outcome = dataclasses.replace(scored_line.outcomes[0], mask=None, anomaly_map=None)
    assert images_of(outcome) == ("frame.png", "overlay.jpg")
    assert np.array_equal(overlay_of(outcome), outcome.frame.image)
    with pytest.raises(EvidenceError, match="has no mask.png"):
        render(outcome, "mask.png", 90)
    with pytest.raises(EvidenceError, match="no published header"):
        published_header(dataclasses.replace(outcome, published=None))


def test_the_overlay_of_a_verdict_from_a_gallery_with_a_region_draws_the_region_s_edge(
    scored_line: ScoredLine,
) -> None:
    outcome = scored_line.outcomes[0]
    assert outcome.anomaly_map is not None
    region = np.zeros_like(outcome.anomaly_map, dtype=np.uint8)
    region[:, outcome.anomaly_map.shape[1] // 2 :] = MASK_ON  # the right half
    with_region = dataclasses.replace(outcome, region=region)
    assert not np.all(overlay_of(outcome) == REGION_BGR, axis=2).any()
    assert np.all(overlay_of(with_region) == REGION_BGR, axis=2).any()


def test_a_verdict_without_a_frame_has_evidence_with_no_images_and_size_zero(scored_line: ScoredLine) -> None:
    fault = Frame("cam1", 99, 1.0, 1.0, NO_IMAGE, "P-1", "a", "unknown product 'zzz'")
    outcome = stamp_published(
        bus_outcome(fault, "ERROR", error="unknown product 'zzz'"), scored_line.boot_id, 2.0
    )
    evidence = evidence_of(outcome, published_header(outcome))
    assert (evidence.frame_width, evidence.frame_height, evidence.images) == (0, 0, [])
    assert evidence.evidence == 2 and images_of(outcome) == ()
    with pytest.raises(EvidenceError, match="has no frame"):
        render(outcome, "overlay.jpg", 90)

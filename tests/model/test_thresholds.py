"""Tests for inspector.model.thresholds on tiny tensors: the gallery's spacing and near-duplicate detection."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from inspector.config.calibration import CalibrationConfig
from inspector.config.runtime import RuntimeConfig
from inspector.demo.data import read_video_frames
from inspector.model.engine import Inspector
from inspector.model.thresholds import (
    SPACING_BLOCK_ROWS,
    Overlap,
    _NearDuplicates,
    calibrate_gallery,
    gallery_spacing,
    overlap_error,
)
from tests.support import LabelledVideo, SyntheticGallery


def _brute_spacing(pooled: np.ndarray) -> float:
    d = np.sqrt(((pooled[:, None, :] - pooled[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    return float(np.median(d.min(1)))


def test_gallery_spacing_is_the_median_nearest_other_distance_also_across_blocks() -> None:
    rng = np.random.default_rng(0)
    for n in (2, 7, SPACING_BLOCK_ROWS + 5):
        pooled = rng.normal(size=(n, 6)).astype(np.float32)
        assert gallery_spacing(torch.from_numpy(pooled)) == np.float32(
            _brute_spacing(pooled.astype(np.float64))
        )
    assert gallery_spacing(torch.zeros(1, 6)) == 0.0


def test_near_duplicates_are_the_images_within_the_cutoff_with_their_nearest_gallery_image() -> None:
    gallery = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    near = _NearDuplicates(cutoff=0.5)
    near.check(3, torch.tensor([[10.0, 0.2], [5.0, 5.0]]), gallery)  # the first is gallery image 1 again
    near.check(5, torch.tensor([[0.0, 10.5]]), gallery)  # exactly at the cutoff counts
    assert {i: g for i, (g, _) in near.found.items()} == {3: 1, 5: 2}
    assert near.found[3][1] == pytest.approx(0.2, rel=1e-6) and near.found[5][1] == 0.5


def test_the_overlap_refusal_names_every_file_up_to_a_bound() -> None:
    overlaps = [Overlap(Path(f"n/{i}.png"), f"{i}.png", "same SHA-256") for i in range(12)]
    message = str(overlap_error(Path("g.gallery"), overlaps))
    assert message.startswith("g.gallery: 12 normal image(s) are already in the gallery")
    assert "n/9.png = gallery image 9.png (same SHA-256)" in message and "n/10.png" not in message
    assert "and 2 more" in message and "--allow-overlap" in message


def test_a_review_band_sends_the_target_share_of_normal_parts_to_review_and_scores_map_to_three_verdicts(
    synthetic_gallery: SyntheticGallery, tmp_path: Path, labelled_video: LabelledVideo
) -> None:
    gallery = Path(shutil.copyfile(synthetic_gallery.path, tmp_path / "g.safetensors"))
    rate, review = 0.01, 0.2
    cal = calibrate_gallery(gallery, RuntimeConfig(), CalibrationConfig(target_review_rate=review))
    assert cal.review_threshold is not None and cal.target_review_rate == review
    assert cal.review_threshold < cal.image_threshold and cal.inconsistencies() == []
    scores = np.array(cal.normal_scores)
    in_band = int(np.count_nonzero((scores > cal.review_threshold) & (scores <= cal.image_threshold)))
    assert in_band == int(np.floor((rate + review) * scores.size)) - int(np.floor(rate * scores.size))
    video, _ = labelled_video("band", 8, seed=9)
    inspector = Inspector.from_gallery(gallery, RuntimeConfig())
    for r in inspector.score(read_video_frames(video)):
        assert r.verdict == cal.verdict_of(r.score) and r.review_threshold == cal.review_threshold
    assert [cal.verdict_of(v) for v in (cal.image_threshold + 1e-6, cal.image_threshold, cal.review_threshold)] == [
        "FAIL", "REVIEW", "PASS",
    ]  # fmt: skip

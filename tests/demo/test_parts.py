"""Tests for inspector.demo.parts: deterministic renders, masks that cover their defects, natural variation."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from inspector.demo.parts import DEFECT_TYPES, render_part

SIZE_PX = 128
MIN_AREA_FRAC = 0.003
MAX_AREA_FRAC = 0.05
SEEDS = (0, 1, 2, 3, 4, 5)


def _render(
    seed: int, defect: str | None = None, size: int = SIZE_PX
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    return render_part(np.random.default_rng(seed), size, defect)


def _abs_diff(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> npt.NDArray[np.float64]:
    """Per-pixel mean absolute BGR difference."""
    return np.asarray(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean(axis=2))


@pytest.mark.parametrize("defect", [None, *DEFECT_TYPES])
def test_render_part_is_deterministic_for_a_seed(defect: str | None) -> None:
    img_a, mask_a = _render(7, defect)
    img_b, mask_b = _render(7, defect)
    np.testing.assert_array_equal(img_a, img_b)
    np.testing.assert_array_equal(mask_a, mask_b)


def test_render_part_returns_bgr_uint8_and_empty_mask_for_good_part() -> None:
    img, mask = _render(3, None, size=96)
    assert img.shape == (96, 96, 3) and img.dtype == np.uint8
    assert mask.shape == (96, 96) and mask.dtype == np.uint8
    assert not mask.any()
    assert not np.array_equal(img[..., 0], img[..., 2]), "image should be colour, not gray copied 3x"


@pytest.mark.parametrize("defect", DEFECT_TYPES)
@pytest.mark.parametrize("size", [SIZE_PX, 256])
def test_defect_mask_is_binary_nonempty_and_area_in_range(defect: str, size: int) -> None:
    for seed in SEEDS:
        img, mask = _render(seed, defect, size)
        assert mask.shape == img.shape[:2] and mask.dtype == np.uint8
        assert set(np.unique(mask).tolist()) == {0, 255}
        area = float((mask > 0).mean())
        assert MIN_AREA_FRAC <= area <= MAX_AREA_FRAC, f"{defect} seed {seed}: area fraction {area:.4f}"


@pytest.mark.parametrize("defect", DEFECT_TYPES)
def test_defect_changes_pixels_mostly_inside_its_mask(defect: str) -> None:
    for seed in SEEDS:
        good, _ = _render(seed, None)
        bad, mask = _render(seed, defect)
        diff = _abs_diff(bad, good)
        inside, outside = diff[mask > 0].mean(), diff[mask == 0].mean()
        assert inside > 20.0, f"{defect} seed {seed}: defect barely visible ({inside:.1f} gray levels)"
        assert inside > 50.0 * max(outside, 0.05), f"{defect} seed {seed}: in {inside:.2f} out {outside:.3f}"


@pytest.mark.parametrize("defect", DEFECT_TYPES)
def test_good_parts_vary_but_less_than_a_defect_inside_its_mask(defect: str) -> None:
    good_vs_good, good_vs_bad = [], []
    for seed in SEEDS:
        good, _ = _render(seed, None)
        other_good, _ = _render(seed + 1000, None)
        bad, mask = _render(seed, defect)
        variation = _abs_diff(good, other_good)
        assert variation.mean() > 3.0, "two good parts should not be near-identical"
        good_vs_good.append(variation[mask > 0].mean())
        good_vs_bad.append(_abs_diff(good, bad)[mask > 0].mean())
    assert np.mean(good_vs_bad) > 1.5 * np.mean(good_vs_good), (good_vs_bad, good_vs_good)


def test_different_seeds_change_pose_and_lighting() -> None:
    means = [float(_render(seed)[0].mean()) for seed in SEEDS]
    assert np.ptp(means) > 1.0, means


def test_render_part_rejects_unknown_defect_naming_the_field() -> None:
    with pytest.raises(ValueError, match="defect"):
        _render(0, "crack")


def test_render_part_rejects_too_small_size_naming_the_field() -> None:
    with pytest.raises(ValueError, match="size_px"):
        render_part(np.random.default_rng(0), 16)

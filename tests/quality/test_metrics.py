"""Tests for inspector.quality.metrics: every metric checked against hand-worked small cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from inspector.quality.metrics import (
    f1_max,
    image_auroc,
    pixel_auroc,
    pro_curve,
    pro_score,
    rates_at_threshold,
    roc_points,
)

# 1x4x4 case with two regions of different sizes.
# Region A = top-left 2x2 block (4 px), region B = single pixel (2,3). 11 negative pixels.
TWO_REGION_MASK = np.array(
    [[[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]]],
    dtype=bool,
)
# Values 0..3 with num_thresholds=4 -> thresholds exactly 0, 1, 2, 3.
# A = {3, 3, 1, 1}, B = {2}; negatives: one 2 at (0,2), three 1s, seven 0s.
TWO_REGION_MAP = np.array(
    [[[3, 3, 2, 0], [1, 1, 1, 0], [1, 1, 0, 2], [0, 0, 0, 0]]],
    dtype=np.float32,
)
# Curve points by hand (threshold: pixels >= t predicted):
#   t=3: A 2/4, B 0/1 -> PRO (0.5+0)/2 = 0.25; negatives >= 3: 0      -> FPR 0
#   t=2: A 2/4, B 1/1 -> PRO (0.5+1)/2 = 0.75; negatives >= 2: 1      -> FPR 1/11
#   t=1: A 4/4, B 1/1 -> PRO 1.0;              negatives >= 1: 1+3=4  -> FPR 4/11
#   t=0: everything   -> PRO 1.0, FPR 1.
HAND_FPR = [0.0, 0.0, 1 / 11, 4 / 11, 1.0, 1.0]
HAND_PRO = [0.0, 0.25, 0.75, 1.0, 1.0, 1.0]


def test_image_auroc_counts_correctly_ordered_pairs_and_half_ties() -> None:
    # Pairs (defective, good): 0.4>0.1 yes, 0.4>0.6 no, 0.8>0.1 yes, 0.8>0.6 yes -> 3/4.
    assert image_auroc(np.array([0, 0, 1, 1]), np.array([0.1, 0.6, 0.4, 0.8])) == pytest.approx(0.75)
    # Tie 0.5 vs 0.5 counts 1/2; 0.5 > 0.2 counts 1 -> (1 + 0.5) / 2 = 0.75.
    assert image_auroc(np.array([0, 0, 1]), np.array([0.2, 0.5, 0.5])) == pytest.approx(0.75)


def test_pixel_auroc_pools_pixels_of_all_images() -> None:
    # Image 0 positives {0.9}, negatives {0.5, 0.1}; image 1 positives {0.4}, negatives {0.2, 0.3}.
    # Pooled: 0.9 beats all 4 negatives, 0.4 beats 0.1, 0.2, 0.3 (not 0.5) -> 7 of 8 pairs = 0.875.
    masks = np.array([[[1, 0, 0]], [[1, 0, 0]]], dtype=bool)
    maps = np.array([[[0.9, 0.5, 0.1]], [[0.4, 0.2, 0.3]]], dtype=np.float32)
    assert pixel_auroc(masks, maps) == pytest.approx(0.875)
    # 0/1 integer masks and float64 maps give the same answer.
    assert pixel_auroc(masks.astype(np.uint8), maps.astype(np.float64)) == pytest.approx(0.875)


def test_pro_curve_matches_hand_worked_points() -> None:
    fpr, pro = pro_curve(TWO_REGION_MASK, TWO_REGION_MAP, num_thresholds=4)
    np.testing.assert_allclose(fpr, HAND_FPR)
    np.testing.assert_allclose(pro, HAND_PRO)


def test_pro_score_interpolates_curve_at_max_fpr() -> None:
    # Interpolate between (1/11, 0.75) and (4/11, 1.0) at 0.3: slope 0.25 / (3/11) = 11/12,
    # PRO(0.3) = 0.75 + (0.3 - 1/11) * 11/12.
    pro_at = 0.75 + (0.3 - 1 / 11) * 11 / 12
    # Trapezoids: (0,0)->(0,0.25): 0; (0,0.25)->(1/11,0.75): (1/11)(0.25+0.75)/2;
    # (1/11,0.75)->(0.3,pro_at): (0.3-1/11)(0.75+pro_at)/2. Divide by 0.3.
    area = (1 / 11) * (0.25 + 0.75) / 2 + (0.3 - 1 / 11) * (0.75 + pro_at) / 2
    assert pro_score(TWO_REGION_MASK, TWO_REGION_MAP, max_fpr=0.3, num_thresholds=4) == pytest.approx(
        area / 0.3
    )


def test_pro_score_at_a_curve_point_and_over_whole_range() -> None:
    # max_fpr = 1/11 is a curve point: area (1/11)(0.25+0.75)/2, divided by 1/11 -> 0.5.
    assert pro_score(TWO_REGION_MASK, TWO_REGION_MAP, max_fpr=1 / 11, num_thresholds=4) == pytest.approx(0.5)
    # max_fpr = 1: add (3/11)(0.75+1)/2 and (7/11)(1+1)/2 to the first trapezoid.
    full = (1 / 11) * 0.5 + (3 / 11) * 0.875 + (7 / 11) * 1.0
    assert pro_score(TWO_REGION_MASK, TWO_REGION_MAP, max_fpr=1.0, num_thresholds=4) == pytest.approx(full)


def test_pro_score_unaffected_by_extra_thresholds_between_distinct_values() -> None:
    # Every threshold between two distinct map values binarises like the next value up,
    # so 200 thresholds yield the same curve points (plus duplicates) as 4.
    coarse = pro_score(TWO_REGION_MASK, TWO_REGION_MAP, num_thresholds=4)
    assert pro_score(TWO_REGION_MASK, TWO_REGION_MAP, num_thresholds=200) == pytest.approx(coarse)


def test_pro_regions_use_eight_connectivity() -> None:
    # Mask pixels (0,0), (0,1), (1,2): 8-connected -> ONE region of 3 px (4-connectivity would give
    # two regions). Map hits only (1,2): PRO at t>0 is 1/3 (4-connectivity: mean(0, 1) = 0.5).
    mask = np.zeros((1, 3, 3), dtype=bool)
    mask[0, 0, 0] = mask[0, 0, 1] = mask[0, 1, 2] = True
    amap = np.zeros((1, 3, 3), dtype=np.float32)
    amap[0, 1, 2] = 1.0
    fpr, pro = pro_curve(mask, amap, num_thresholds=2)
    # Points: (0,0), t=1 -> (0, 1/3), t=0 -> (1, 1), closing (1, 1).
    np.testing.assert_allclose(fpr, [0.0, 0.0, 1.0, 1.0])
    np.testing.assert_allclose(pro, [0.0, 1 / 3, 1.0, 1.0])
    # Area to 0.3: PRO(0.3) = 1/3 + 0.3 * (2/3) = 8/15; trapezoid 0.3 * (1/3 + 8/15) / 2; / 0.3.
    assert pro_score(mask, amap, num_thresholds=2) == pytest.approx((1 / 3 + 8 / 15) / 2)


def test_pro_score_of_perfect_map_is_one_and_of_inverted_map_is_zero() -> None:
    masks = np.zeros((2, 8, 8), dtype=bool)
    masks[0, 1:4, 1:4] = True
    masks[0, 6, 6] = True
    perfect = masks.astype(np.float32)
    assert pro_score(masks, perfect) == pytest.approx(1.0)
    # All negatives above all positives: FPR reaches 1 before any region pixel is covered.
    assert pro_score(masks, 1.0 - perfect) == pytest.approx(0.0, abs=1e-12)


def test_pro_score_counts_empty_mask_images_as_negatives_only() -> None:
    # Append a good image of 16 zeros: the map range (thresholds 0..3) is unchanged and it only adds
    # 16 negatives at value 0. Negatives = 11 + 16 = 27; FPRs at t=3/2/1 become 0, 1/27, 4/27;
    # PRO is unchanged because the image has no region.
    masks = np.concatenate([TWO_REGION_MASK, np.zeros((1, 4, 4), dtype=bool)])
    maps = np.concatenate([TWO_REGION_MAP, np.zeros((1, 4, 4), dtype=np.float32)])
    fpr, pro = pro_curve(masks, maps, num_thresholds=4)
    np.testing.assert_allclose(fpr, [0.0, 0.0, 1 / 27, 4 / 27, 1.0, 1.0])
    np.testing.assert_allclose(pro, HAND_PRO)


def _brute_force_pro(masks: np.ndarray, maps: np.ndarray, max_fpr: float, num_thresholds: int) -> float:
    """Direct definition: binarise per threshold, loop over components, integrate."""
    thresholds = np.linspace(maps.min(), maps.max(), num_thresholds).astype(np.float32)
    points = [(0.0, 0.0), (1.0, 1.0)]
    for t in thresholds:
        predicted = maps >= t
        overlaps = []
        for mask, pred in zip(masks, predicted, strict=True):
            comps, count = ndimage.label(mask, structure=np.ones((3, 3)))
            overlaps += [float(pred[comps == c].mean()) for c in range(1, count + 1)]
        fpr = np.count_nonzero(predicted & ~masks) / np.count_nonzero(~masks)
        points.append((float(fpr), float(np.mean(overlaps))))
    points.sort()
    xs, ys = np.array(points).T
    y_at = float(np.interp(max_fpr, xs, ys))
    keep = xs <= max_fpr
    return float(np.trapezoid(np.append(ys[keep], y_at), np.append(xs[keep], max_fpr))) / max_fpr


def test_pro_score_matches_brute_force_definition_on_random_maps() -> None:
    rng = np.random.default_rng(7)
    masks = np.zeros((3, 16, 16), dtype=bool)
    masks[0, 2:6, 3:9] = True
    masks[0, 10, 10:12] = True
    masks[1, 8:15, 1:4] = True
    maps = rng.random((3, 16, 16)).astype(np.float32) + masks * np.float32(0.4)
    expected = _brute_force_pro(masks, maps, max_fpr=0.3, num_thresholds=50)
    assert pro_score(masks, maps, max_fpr=0.3, num_thresholds=50) == pytest.approx(expected, rel=1e-9)


def test_f1_max_picks_best_threshold() -> None:
    # Descending scores: 0.9(1) 0.7(1) 0.5(0) 0.3(1) 0.1(0); 3 defective.
    # >=0.9: P 1, R 1/3 -> F1 0.5; >=0.7: P 1, R 2/3 -> 0.8; >=0.5: P 2/3, R 2/3 -> 2/3;
    # >=0.3: P 3/4, R 1 -> 2*0.75/1.75 = 6/7; >=0.1: P 3/5, R 1 -> 0.75. Max 6/7.
    labels = np.array([0, 1, 1, 0, 1])
    scores = np.array([0.1, 0.9, 0.3, 0.5, 0.7])
    assert f1_max(labels, scores) == pytest.approx(6 / 7)


def test_rates_at_threshold_score_equal_to_threshold_passes() -> None:
    # Good scores 0.2, 0.5, 0.7: only 0.7 > 0.5 -> FRR 1/3.
    # Defective scores 0.5, 0.9: 0.5 <= 0.5 escapes -> escape rate 1/2.
    labels = np.array([0, 0, 0, 1, 1])
    scores = np.array([0.2, 0.5, 0.7, 0.5, 0.9])
    frr, escape = rates_at_threshold(labels, scores, 0.5)
    assert frr == pytest.approx(1 / 3)
    assert escape == pytest.approx(0.5)


def test_roc_points_trace_hand_worked_curve() -> None:
    # Descending thresholds on ([0,0,1,1], [0.1,0.6,0.4,0.8]): 0.8 -> (0, .5); 0.6 -> (.5, .5);
    # 0.4 -> (.5, 1); 0.1 -> (1, 1). Area = 0.5*0.5 + 0.5*1 = 0.75.
    fpr, tpr = roc_points(np.array([0, 0, 1, 1]), np.array([0.1, 0.6, 0.4, 0.8]))
    assert (fpr[0], tpr[0]) == (0.0, 0.0)
    assert (fpr[-1], tpr[-1]) == (1.0, 1.0)
    points = set(zip(fpr.tolist(), tpr.tolist(), strict=True))
    assert {(0.0, 0.5), (0.5, 1.0)} <= points
    assert float(np.trapezoid(tpr, fpr)) == pytest.approx(0.75)


@pytest.mark.parametrize("metric", [image_auroc, f1_max, roc_points])
def test_image_metrics_reject_single_class(metric: object) -> None:
    with pytest.raises(ValueError, match="only one class"):
        metric(np.array([0, 0, 0]), np.array([0.1, 0.2, 0.3]))  # type: ignore[operator]


def test_rates_reject_single_class() -> None:
    with pytest.raises(ValueError, match="only one class.*defective images only"):
        rates_at_threshold(np.array([1, 1]), np.array([0.1, 0.2]), 0.15)


@pytest.mark.parametrize("metric", [pixel_auroc, pro_score])
def test_pixel_metrics_reject_masks_without_defects(metric: object) -> None:
    with pytest.raises(ValueError, match="only one class"):
        metric(np.zeros((2, 4, 4), dtype=bool), np.ones((2, 4, 4), dtype=np.float32))  # type: ignore[operator]


def test_pixel_metrics_reject_shape_mismatch_and_nan() -> None:
    masks = TWO_REGION_MASK
    with pytest.raises(ValueError, match="equal shapes"):
        pixel_auroc(masks, np.zeros((1, 4, 5), dtype=np.float32))
    bad = TWO_REGION_MAP.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pro_score(masks, bad)


def test_pro_score_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="max_fpr"):
        pro_score(TWO_REGION_MASK, TWO_REGION_MAP, max_fpr=0.0)
    with pytest.raises(ValueError, match="num_thresholds"):
        pro_score(TWO_REGION_MASK, TWO_REGION_MAP, num_thresholds=1)

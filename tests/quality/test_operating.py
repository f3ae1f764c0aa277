"""The operating point against the target: hand-worked counts, Clopper-Pearson and the binomial target range."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from inspector.model.manifest import Calibration
from inspector.quality.operating import calibration_lines, operating_lines, operating_point, review_point

LABELS = np.array([0] * 190 + [1] * 10)


def _scores(false_rejects: int) -> np.ndarray:
    good = np.linspace(0.0, 1.0, 190)
    good[:false_rejects] = 2.0 + np.arange(false_rejects)  # above a threshold of 1.5
    return np.concatenate([good, [0.5, 1.0, 1.4, 1.6, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]])


def test_operating_point_counts_rejects_and_escapes_and_compares_with_the_target() -> None:
    op = operating_point(LABELS, _scores(7), 1.5, 0.01)
    assert (op.false_rejects, op.n_good, op.escapes, op.n_defect) == (7, 190, 3, 10)
    assert op.interval == pytest.approx(
        (stats.beta.ppf(0.025, 7, 184), stats.beta.ppf(0.975, 8, 183)), abs=1e-7
    )
    assert op.target_counts == (0, 5)  # Binomial(190, 1%): central 95%
    assert not op.inside_target  # 3.7% is outside what a 1% rate gives for 190 images
    assert operating_point(LABELS, _scores(4), 1.5, 0.01).inside_target


def test_the_threshold_meeting_the_target_on_the_test_set_lets_at_most_the_target_through() -> None:
    op = operating_point(LABELS, _scores(7), 1.5, 0.01)
    good = _scores(7)[:190]
    assert np.count_nonzero(good > op.test_threshold) <= 0.01 * 190
    assert op.test_threshold == 7.0  # one of 190 may lie above: the second highest (2.0 + 5)
    assert op.test_threshold_escapes == 9  # only 8.0 lies above 7.0
    metrics = op.metrics()
    assert metrics["escape_rate_at_threshold_meeting_target"] == pytest.approx(0.9)
    assert metrics["inside_target"] == 0.0


def test_report_lines_state_the_interval_the_range_and_the_supported_bound() -> None:
    lines = "\n".join(operating_lines(operating_point(LABELS, _scores(7), 1.5, 0.01)))
    assert "| false rejects on test/good | 7/190 = 3.68% (95% CI 1.49% - 7.44%) |" in lines
    assert "| the target's central 95% for 190 good images | 0 - 5 false rejects: above |" in lines
    cal = Calibration(
        image_threshold=1.5, target_false_reject_rate=0.01, pixel_threshold=1.0, pixel_target_rate=0.01,
        method="leave_m_out", n_images=54, score_median=1.0, map_max_median=1.0, created_at="2026-01-01T00:00:00Z",
        neighbours_left_out=5, normal_above_threshold=0, false_reject_upper_bound=0.0540, images_needed=299,
        normal_scores=[1.0] * 54, normal_knn=[1.0] * 54, normal_map_max=[1.0] * 54,
    )  # fmt: skip
    text = " ".join(calibration_lines(cal))
    assert "leave_m_out (m=5), empirical tail, 54 normal images" in text
    assert "bound the false-reject rate at 5.40%" in text and "needs 299 normal images" in text
    assert calibration_lines(None) == []


def test_the_review_band_counts_good_parts_reviewed_and_defects_caught_by_fail_or_review() -> None:
    normal = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 2.0]
    cal = Calibration(
        image_threshold=2.0, target_false_reject_rate=0.01, pixel_threshold=2.0, pixel_target_rate=0.01,
        method="leave_one_out", n_images=10, score_median=0.95, map_max_median=0.95, normal_scores=normal,
        normal_knn=normal, normal_map_max=normal, created_at="2026-12-07T06:00:00Z", target_review_rate=0.2,
        review_threshold=1.2,
    )  # fmt: skip
    assert cal.inconsistencies() == []
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.5, 1.5, 1.9, 2.5, 1.0, 1.5, 3.0, 2.0])
    point = review_point(labels, scores, cal)
    assert point is not None
    assert (point.good_reviewed, point.good_failed, point.defects_caught, point.defects_escaped) == (
        2,
        1,
        3,
        1,
    )
    lo, hi = point.review_interval
    assert lo == pytest.approx(stats.beta.ppf(0.025, 2, 3)) and hi == pytest.approx(
        stats.beta.ppf(0.975, 3, 2)
    )
    assert point.line("tile").startswith(
        "tile: review band (target 20.0%): 2 of 4 good parts to REVIEW (50.0%"
    )
    assert "3 of 4 defects caught by FAIL or REVIEW (75.0%" in point.line("tile")
    assert (
        review_point(
            labels, scores, cal.model_copy(update={"target_review_rate": None, "review_threshold": None})
        )
        is None
    )

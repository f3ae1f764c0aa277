"""Calibration math on synthetic score sets with known quantiles: tail fits, left-out rows, binomial bounds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from inspector.model import calibration as calib

RATE = 0.01
N_LARGE = 40_000  # samples whose fitted quantiles must be near the true ones
QUANTILE_RTOL = 0.03
BOUND_TOL = 1e-7


def test_gaussian_threshold_is_the_true_upper_quantile_of_normal_scores() -> None:
    values = np.random.default_rng(0).normal(3.0, 2.0, N_LARGE)
    truth = stats.norm.ppf(1 - RATE, loc=3.0, scale=2.0)
    assert calib.gaussian_threshold(values, RATE) == pytest.approx(truth, rel=QUANTILE_RTOL)


@pytest.mark.parametrize(("shape", "scale"), [(0.2, 1.0), (0.0, 2.0), (-0.25, 0.5)])
def test_pareto_fit_recovers_shape_and_scale_of_generalised_pareto_samples(
    shape: float, scale: float
) -> None:
    excess = stats.genpareto.rvs(shape, scale=scale, size=N_LARGE, random_state=np.random.default_rng(1))
    fitted_shape, fitted_scale = calib.fit_pareto(excess)
    assert fitted_shape == pytest.approx(shape, abs=0.05)
    assert fitted_scale == pytest.approx(scale, rel=0.05)


@pytest.mark.parametrize("shape", [0.15, 1e-12, -0.3])
def test_pareto_quantile_equals_scipys(shape: float) -> None:
    for prob in (0.5, 0.9, 0.999):
        assert calib.pareto_quantile(shape, 1.7, prob) == pytest.approx(
            stats.genpareto.ppf(prob, shape, scale=1.7), rel=1e-6
        )


@pytest.mark.parametrize(
    "dist", [stats.lognorm(0.4, scale=2.0), stats.gamma(3.0, scale=0.5), stats.norm(5, 1)]
)
def test_pareto_threshold_is_near_the_true_upper_quantile(dist: stats.rv_continuous) -> None:
    values = dist.rvs(size=N_LARGE, random_state=np.random.default_rng(2))
    assert calib.pareto_threshold(values, RATE, 0.2) == pytest.approx(dist.ppf(1 - RATE), rel=QUANTILE_RTOL)


def test_pareto_threshold_lies_beyond_every_score_when_the_target_is_rarer_than_the_sample() -> None:
    """A 1% quantile of 50 scores: the empirical one is just their maximum; the fitted tail extrapolates."""
    values = np.random.default_rng(3).normal(0.0, 1.0, 50)
    fitted = calib.pareto_threshold(values, 0.001, 0.3)
    assert calib.threshold_at_rate(values, 0.001) == values.max()
    assert fitted > values.max()


def test_pareto_threshold_falls_back_to_the_empirical_quantile_outside_the_tail_or_when_flat() -> None:
    values = np.random.default_rng(4).normal(0.0, 1.0, 200)
    assert calib.pareto_threshold(values, 0.3, 0.2) == calib.threshold_at_rate(values, 0.3)
    flat = np.ones(40)
    assert calib.pareto_threshold(flat, RATE, 0.2) == 1.0


@pytest.mark.parametrize("tail", ["empirical", "gaussian", "pareto"])
def test_threshold_for_dispatches_to_each_tail_estimate(tail: str) -> None:
    values = np.random.default_rng(5).normal(0.0, 1.0, 300)
    expected = {
        "empirical": calib.threshold_at_rate(values, RATE),
        "gaussian": calib.gaussian_threshold(values, RATE),
        "pareto": calib.pareto_threshold(values, RATE, 0.25),
    }[tail]
    assert calib.threshold_for(values, RATE, tail, 0.25) == expected  # type: ignore[arg-type]


def _clusters(n_clusters: int, size: int) -> np.ndarray:
    """Pooled features in tight clusters of ``size`` near-duplicates, the clusters far apart."""
    rng = np.random.default_rng(6)
    centres = rng.normal(0.0, 100.0, (n_clusters, 8))
    return np.repeat(centres, size, axis=0) + rng.normal(0.0, 0.01, (n_clusters * size, 8))


def test_leave_one_out_rows_leave_out_only_the_image_itself() -> None:
    rows = calib.left_out_rows(_clusters(4, 3), "leave_one_out", 5, 5)
    np.testing.assert_array_equal(rows, np.arange(12)[:, None])


def test_leave_m_out_rows_leave_out_each_images_near_duplicates() -> None:
    rows = calib.left_out_rows(_clusters(5, 3), "leave_m_out", 2, 5)
    assert rows.shape == (15, 3)
    for i, row in enumerate(rows):
        assert row[0] == i
        assert set(row.tolist()) == set(range(3 * (i // 3), 3 * (i // 3) + 3))


def test_leave_m_out_always_leaves_one_image_in() -> None:
    rows = calib.left_out_rows(_clusters(2, 2), "leave_m_out", 50, 5)
    assert rows.shape == (4, 3)
    assert all(len(set(r.tolist())) == 3 for r in rows)


@pytest.mark.parametrize(("n", "folds"), [(12, 5), (10, 5), (7, 3), (3, 10)])
def test_k_fold_rows_leave_out_exactly_the_images_own_contiguous_fold(n: int, folds: int) -> None:
    rows = calib.left_out_rows(np.zeros((n, 2)), "k_fold", 5, folds)
    sets = [set(r.tolist()) for r in rows]
    for i, s in enumerate(sets):
        assert i in s
        assert s == {j for j in range(n) if sets[j] == s}  # a fold is an equivalence class
        assert max(s) - min(s) == len(s) - 1  # contiguous
    assert len({frozenset(s) for s in sets}) == min(n, folds)


@pytest.mark.parametrize(("k", "n"), [(0, 20), (0, 300), (1, 20), (7, 190), (3, 54), (20, 20)])
def test_clopper_pearson_bounds_equal_the_beta_quantiles(k: int, n: int) -> None:
    lo, hi = calib.clopper_pearson(k, n)
    assert lo == pytest.approx(stats.beta.ppf(0.025, k, n - k + 1) if k else 0.0, abs=BOUND_TOL)
    assert hi == pytest.approx(stats.beta.ppf(0.975, k + 1, n - k) if k < n else 1.0, abs=BOUND_TOL)
    one_sided = stats.beta.ppf(0.95, k + 1, n - k) if k < n else 1.0
    assert calib.upper_bound(k, n) == pytest.approx(one_sided, abs=BOUND_TOL)


def test_zero_failures_bound_is_the_closed_form_and_the_rule_of_three() -> None:
    assert calib.upper_bound(0, 54) == pytest.approx(1 - 0.05 ** (1 / 54), abs=BOUND_TOL)
    assert calib.images_needed(RATE) == 299
    assert calib.upper_bound(0, calib.images_needed(RATE)) <= RATE < calib.upper_bound(0, 298)
    for rate in (0.001, 0.005, 0.02, 0.05):
        assert abs(calib.images_needed(rate) - 3 / rate) <= 0.02 * 3 / rate


@pytest.mark.parametrize(("n", "rate"), [(20, 0.01), (190, 0.01), (1000, 0.05), (54, 0.1)])
def test_target_interval_is_the_central_95_percent_of_the_binomial(n: int, rate: float) -> None:
    lo, hi = calib.target_interval(n, rate)
    assert (lo, hi) == (int(stats.binom.ppf(0.025, n, rate)), int(stats.binom.ppf(0.975, n, rate)))


def test_binomial_cdf_equals_scipys() -> None:
    for k, n, p in [(0, 10, 0.1), (5, 190, 0.01), (40, 100, 0.5), (100, 100, 0.3), (-1, 5, 0.5)]:
        assert calib.binomial_cdf(k, n, p) == pytest.approx(stats.binom.cdf(k, n, p), abs=1e-12)
    assert math.isclose(calib.binomial_cdf(3, 10, 0.0), 1.0) and calib.binomial_cdf(3, 10, 1.0) == 0.0

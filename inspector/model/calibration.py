"""Calibration math: which gallery images each normal score leaves out, tail fits and binomial bounds (pure)."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

from inspector.config.calibration import LeaveOut, Tail

TAIL_FRACTION_DEFAULT = 0.2  # of a record that does not state its tail fraction
CONFIDENCE = 0.95  # of every bound and interval stated to the engineer
MIN_TAIL_POINTS = 10  # fewest exceedances a Pareto tail is fitted to
MIN_FIT_POINTS = 3  # below this many exceedances (or with no spread) the empirical quantile is used
PWM_PLOTTING_SHIFT = 0.35  # Hosking & Wallis plotting position (i - 0.35) / n
BISECTION_STEPS = 200  # halvings of [0, 1] when solving a binomial bound: far below float resolution
SHAPE_ZERO = 1e-9  # |GPD shape| below this is the exponential limit


def threshold_at_rate(values: np.ndarray, rate: float) -> float:
    """The smallest observed value such that at most ``rate`` of the values lie strictly above it."""
    if values.size == 0:
        raise ValueError("no values to calibrate from")
    n = values.size
    allowed_above = min(int(np.floor(rate * n + 1e-9)), n - 1)
    return float(np.sort(values, axis=None)[n - 1 - allowed_above])


def gaussian_threshold(values: np.ndarray, rate: float) -> float:
    """The upper ``rate`` quantile of a normal distribution fitted to the values (mean, sample std)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size < 2:
        raise ValueError("a Gaussian fit needs at least two values")
    return float(v.mean() + NormalDist().inv_cdf(1.0 - rate) * v.std(ddof=1))


def fit_pareto(excess: np.ndarray) -> tuple[float, float]:
    """Generalised Pareto fit to exceedances over a threshold by probability-weighted moments.

    Hosking & Wallis (1987): robust for small samples, closed form. Returns (shape, scale) in scipy's
    ``genpareto`` convention (shape > 0: heavy tail, < 0: bounded tail).
    """
    y = np.sort(np.asarray(excess, dtype=np.float64).ravel())
    n = y.size
    if n < MIN_FIT_POINTS or y[-1] <= y[0] or np.any(y < 0):
        raise ValueError(f"need at least {MIN_FIT_POINTS} non-negative exceedances with some spread")
    p = (np.arange(1, n + 1) - PWM_PLOTTING_SHIFT) / n
    a0 = float(y.mean())
    a1 = float(np.mean((1.0 - p) * y))
    k = a0 / (a0 - 2.0 * a1) - 2.0  # Hosking's shape: scipy's c = -k
    scale = 2.0 * a0 * a1 / (a0 - 2.0 * a1)
    return -k, scale


def pareto_quantile(shape: float, scale: float, prob: float) -> float:
    """The ``prob`` quantile of a generalised Pareto distribution (scipy's convention)."""
    if abs(shape) < SHAPE_ZERO:
        return -scale * math.log1p(-prob)
    return float(scale / shape * ((1.0 - prob) ** (-shape) - 1.0))


def pareto_threshold(values: np.ndarray, rate: float, tail_fraction: float) -> float:
    """The upper ``rate`` quantile from a generalised Pareto fit to the top ``tail_fraction`` of the values.

    Peaks over threshold: u is the largest value below the tail, the tail's excesses over u are fitted, and
    the quantile is u + the excess quantile at 1 - rate / (tail share). When the rate is not inside the tail,
    or the tail is too small or flat to fit, it is the empirical quantile.
    """
    v = np.sort(np.asarray(values, dtype=np.float64).ravel())
    n = v.size
    n_tail = min(n - 1, max(MIN_TAIL_POINTS, math.ceil(tail_fraction * n)))
    share = n_tail / n if n else 0.0
    if n_tail < MIN_FIT_POINTS or rate >= share:
        return threshold_at_rate(v, rate)
    u = float(v[n - n_tail - 1])
    try:
        shape, scale = fit_pareto(v[n - n_tail :] - u)
    except ValueError:
        return threshold_at_rate(v, rate)
    return u + pareto_quantile(shape, scale, 1.0 - rate / share)


def threshold_for(values: np.ndarray, rate: float, tail: Tail, tail_fraction: float) -> float:
    """The threshold that lets ``rate`` of normal scores above it, by the chosen estimate of the tail."""
    if tail == "gaussian":
        return gaussian_threshold(values, rate)
    if tail == "pareto":
        return pareto_threshold(values, rate, tail_fraction)
    return threshold_at_rate(values, rate)


def left_out_rows(pooled: np.ndarray, how: LeaveOut, m: int, folds: int) -> np.ndarray:
    """[N, M] gallery indices each gallery image is scored without (a row repeats its own index as padding).

    ``leave_one_out``: itself. ``leave_m_out``: itself and its ``m`` nearest gallery images by pooled-feature
    distance (near-duplicates such as sequential captures). ``k_fold``: its whole fold, ``folds`` contiguous
    blocks in gallery (file name) order. At least one image is always left in.
    """
    n = pooled.shape[0]
    if n < 2:
        raise ValueError("calibration from the gallery needs at least two images")
    own = np.arange(n)[:, None]
    if how == "leave_one_out":
        return own
    if how == "leave_m_out":
        mm = min(m, n - 2)
        x = np.asarray(pooled, dtype=np.float64)
        sq = (x * x).sum(1)
        d2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
        np.fill_diagonal(d2, np.inf)
        nearest = np.argsort(d2, axis=1, kind="stable")[:, :mm]
        return np.concatenate([own, nearest], axis=1)
    k = min(folds, n)
    fold = np.arange(n) * k // n
    width = int(np.bincount(fold).max())
    rows = np.repeat(own, width, axis=1)
    for f in range(k):
        members = np.flatnonzero(fold == f)
        rows[members, : members.size] = members
    return rows


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space."""
    if k < 0:
        return 0.0
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    lp, lq = math.log(p), math.log1p(-p)
    base = math.lgamma(n + 1)
    terms = [base - math.lgamma(j + 1) - math.lgamma(n - j + 1) + j * lp + (n - j) * lq for j in range(k + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def _solve_p(k: int, n: int, level: float) -> float:
    """The p at which P(X <= k; n, p) = level (the CDF falls as p rises), by bisection."""
    lo, hi = 0.0, 1.0
    for _ in range(BISECTION_STEPS):
        mid = (lo + hi) / 2
        if binomial_cdf(k, n, mid) > level:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def upper_bound(failures: int, n: int, confidence: float = CONFIDENCE) -> float:
    """One-sided Clopper-Pearson upper bound on a rate after ``failures`` in ``n`` trials."""
    if n < 1:
        raise ValueError("no trials")
    if failures >= n:
        return 1.0
    return _solve_p(failures, n, 1.0 - confidence)


def clopper_pearson(failures: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Two-sided Clopper-Pearson interval of a rate after ``failures`` in ``n`` trials."""
    if n < 1:
        raise ValueError("no trials")
    alpha = (1.0 - confidence) / 2
    lo = 0.0 if failures <= 0 else _solve_p(failures - 1, n, 1.0 - alpha)
    hi = 1.0 if failures >= n else _solve_p(failures, n, alpha)
    return lo, hi


def binomial_quantile(n: int, p: float, q: float) -> int:
    """The smallest k with P(X <= k) >= q for X ~ Binomial(n, p)."""
    for k in range(n + 1):
        if binomial_cdf(k, n, p) >= q:
            return k
    return n


def target_interval(n: int, rate: float, confidence: float = CONFIDENCE) -> tuple[int, int]:
    """Counts of failures out of n that a true rate of ``rate`` gives with the central ``confidence``."""
    alpha = (1.0 - confidence) / 2
    return binomial_quantile(n, rate, alpha), binomial_quantile(n, rate, 1.0 - alpha)


def images_needed(rate: float, confidence: float = CONFIDENCE) -> int:
    """Normal images needed so that zero failures among them bound the rate at ``rate`` (about 3 / rate)."""
    return math.ceil(math.log(1.0 - confidence) / math.log1p(-rate))

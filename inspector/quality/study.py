"""Calibration study arithmetic: each calibration method's threshold and its realised rates on labelled tests."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from inspector.config.calibration import LeaveOut, Tail
from inspector.model import calibration as calib

TAILS: tuple[Tail, ...] = ("empirical", "gaussian", "pareto")
MODES = ("map_max", "map_top_mean", "knn_plus_map", "knn_pooled")
TAIL_FRACTION = 0.2  # the config's default share of the top normal scores a Pareto tail is fitted to
ORACLE = "test set (oracle)"


@dataclass(frozen=True)
class Scores:
    """Raw image-score variants of a set of images."""

    knn: np.ndarray
    map_max: np.ndarray
    map_top_mean: np.ndarray

    def scaled(self, factor: float) -> Scores:
        """The same images with every map-based score multiplied by ``factor`` (other stage scales)."""
        return Scores(self.knn, self.map_max * factor, self.map_top_mean * factor)


@dataclass(frozen=True)
class Split:
    """One way of leaving gallery images out while scoring them."""

    leave_out: LeaveOut
    m: int = 5
    folds: int = 5

    @property
    def label(self) -> str:
        """``leave_one_out``, ``leave_m_out:<m>`` or ``k_fold:<folds>``."""
        if self.leave_out == "leave_m_out":
            return f"leave_m_out:{self.m}"
        if self.leave_out == "k_fold":
            return f"k_fold:{self.folds}"
        return "leave_one_out"


def parse_splits(text: str) -> list[Split]:
    """``leave_one_out,leave_m_out:5,k_fold:5`` -> splits.

    Raises:
        ValueError: an unknown name.
    """
    out: list[Split] = []
    for item in text.split(","):
        name, _, arg = item.strip().partition(":")
        if name == "leave_one_out":
            out.append(Split("leave_one_out"))
        elif name == "leave_m_out":
            out.append(Split("leave_m_out", m=int(arg or 5)))
        elif name == "k_fold":
            out.append(Split("k_fold", folds=int(arg or 5)))
        else:
            raise ValueError(f"--splits: unknown split {name!r} (leave_one_out, leave_m_out:<m>, k_fold:<k>)")
    return out


def geometric_mean(values: list[float]) -> float:
    """Geometric mean of positive values."""
    return math.exp(sum(math.log(v) for v in values) / len(values))


def image_scores(scores: Scores, mode: str, normal: Scores) -> np.ndarray:
    """Image scores in one mode; knn_plus_map divides by the normal scores' medians, as calibration does."""
    if mode == "knn_pooled":
        return scores.knn
    if mode == "map_max":
        return scores.map_max
    if mode == "map_top_mean":
        return scores.map_top_mean
    knn_median = float(np.median(normal.knn)) or 1.0
    max_median = float(np.median(normal.map_max)) or 1.0
    return np.asarray(scores.knn / knn_median + scores.map_max / max_median)


@dataclass(frozen=True)
class MethodRow:
    """One calibration method's threshold and what it did on the test set."""

    split: str
    tail: str
    mode: str
    threshold: float
    n_normal: int
    false_rejects: int
    n_good: int
    escapes: int
    n_defect: int
    target_counts: tuple[int, int]
    escapes_by_type: dict[str, tuple[int, int]]

    @property
    def inside_target(self) -> bool:
        """The realised false rejects lie in the target's central 95% binomial interval for n_good images."""
        lo, hi = self.target_counts
        return lo <= self.false_rejects <= hi


def evaluate_threshold(
    split: str, tail: str, mode: str, threshold: float, n_normal: int, test: np.ndarray,
    labels: np.ndarray, defect_types: list[str], rate: float,
) -> MethodRow:  # fmt: skip
    """Count false rejects (good above the threshold) and escapes (defective at or below it)."""
    good, bad = test[labels == 0], test[labels == 1]
    types = np.array(defect_types)
    by_type = {
        t: (int(np.count_nonzero(test[types == t] <= threshold)), int(np.count_nonzero(types == t)))
        for t in sorted(set(defect_types) - {"good"})
    }
    return MethodRow(
        split, tail, mode, threshold, n_normal, int(np.count_nonzero(good > threshold)), good.size,
        int(np.count_nonzero(bad <= threshold)), bad.size, calib.target_interval(good.size, rate), by_type,
    )  # fmt: skip


def method_rows(
    normals: Mapping[str, tuple[Scores, list[float] | None]],
    test: Scores,
    test_scales: list[float] | None,
    labels: np.ndarray,
    defect_types: list[str],
    rate: float,
) -> list[MethodRow]:
    """Every split x tail x mode, plus the test-set threshold that would have met the target (per mode).

    The test scores were fused with ``test_scales``; under the scaled geometric-mean fusion a split's own stage
    scales multiply every map by one constant, so its test map scores are the given ones rescaled.
    """
    rows: list[MethodRow] = []
    first = next(iter(normals.values()))[0]
    for mode in MODES:
        ref = image_scores(test, mode, first)
        oracle = calib.threshold_at_rate(ref[labels == 0], rate)
        rows.append(evaluate_threshold(ORACLE, "empirical", mode, oracle, int((labels == 0).sum()), ref,
                                       labels, defect_types, rate))  # fmt: skip
    for label, (normal, scales) in normals.items():
        factor = geometric_mean(test_scales) / geometric_mean(scales) if scales and test_scales else 1.0
        test_here = test.scaled(factor)
        for mode in MODES:
            values = image_scores(normal, mode, normal)
            scored = image_scores(test_here, mode, normal)
            for tail in TAILS:
                thr = calib.threshold_for(values, rate, tail, TAIL_FRACTION)
                rows.append(evaluate_threshold(label, tail, mode, thr, values.size, scored, labels,
                                               defect_types, rate))  # fmt: skip
    return rows


def table_lines(rows: list[MethodRow], metrics: dict[str, float], category: str) -> list[str]:
    """Markdown: the category's threshold-free metrics, then one line per method."""
    head = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
    lines = [
        f"#### {category}: {head}",
        "",
        (
            "| normal scores | tail | image score | threshold | false rejects on test/good | target's 95% range "
            "| inside | escapes | escapes by defect type |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lo, hi = r.target_counts
        types = ", ".join(f"{t} {e}/{n}" for t, (e, n) in r.escapes_by_type.items())
        lines.append(
            f"| {r.split} | {r.tail} | {r.mode} | {r.threshold:.4f} | {r.false_rejects}/{r.n_good} "
            f"({r.false_rejects / max(1, r.n_good):.1%}) | {lo}-{hi} | {'yes' if r.inside_target else 'no'} "
            f"| {r.escapes}/{r.n_defect} ({r.escapes / max(1, r.n_defect):.1%}) | {types} |"
        )
    return [*lines, ""]

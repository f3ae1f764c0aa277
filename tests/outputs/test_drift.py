"""Tests for inspector.outputs.drift: rolling PASS-score statistics, their window and their gauges."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from inspector.config.drift import DriftConfig
from inspector.core.records import Outcome
from inspector.ops.output_metrics import OutputMetrics
from inspector.outputs.drift import DriftTracker, Reference
from tests.support import ScoredLine

REFERENCE = Reference(threshold=2.0, median=0.5)


def with_score(template: Outcome, score: float, verdict: str = "PASS") -> Outcome:
    return dataclasses.replace(template, score=score, verdict=verdict)  # type: ignore[arg-type]


def test_statistics_are_the_median_and_99th_percentile_of_the_window(scored_line: ScoredLine) -> None:
    now = [0.0]
    tracker = DriftTracker(
        DriftConfig(window_pass_scores=100, min_pass_scores=10), {"cam1": REFERENCE}, clock=lambda: now[0]
    )
    rng = np.random.default_rng(1)
    scores = rng.gamma(4.0, 0.2, 150)
    template = scored_line.outcomes[0]
    for score in scores:
        tracker.deliver(with_score(template, float(score)))
    tracker.deliver(with_score(template, 99.0, "FAIL"))  # FAIL scores are not part of the normal world
    window = scores[-100:]  # the window keeps the latest 100
    st = tracker.stats("cam1")
    assert st.count == 100
    assert st.median == pytest.approx(float(np.median(window)), rel=1e-12)
    assert st.p99 == pytest.approx(float(np.percentile(window, 99.0)), rel=1e-12)
    assert st.ratio == pytest.approx(st.median / 0.5, rel=1e-12)


def test_scores_leave_the_window_with_age_and_too_few_give_nan(scored_line: ScoredLine) -> None:
    now = [0.0]
    config = DriftConfig(window_pass_scores=100, min_pass_scores=5, max_age_s=120.0)
    tracker = DriftTracker(config, {"cam1": REFERENCE, "cam2": Reference(None, None)}, clock=lambda: now[0])
    for i in range(6):
        now[0] = float(i * 20)
        tracker.deliver(with_score(scored_line.outcomes[0], 0.5))
    assert tracker.stats("cam1").count == 6 and tracker.stats("cam1").ratio == pytest.approx(1.0)
    now[0] = 170.0  # only the scores from t=60, 80 and 100 are younger than 120 s
    st = tracker.stats("cam1")
    assert st.count == 3 and math.isnan(st.median) and math.isnan(st.ratio)
    assert tracker.stats("cam2").count == 0


def test_gauges_carry_the_statistics_the_threshold_and_the_calibration_median(
    scored_line: ScoredLine,
) -> None:
    registry = CollectorRegistry()
    metrics = OutputMetrics(registry)
    metrics.init_camera("cam1")
    tracker = DriftTracker(
        DriftConfig(window_pass_scores=10, min_pass_scores=2), {"cam1": REFERENCE}, metrics
    )
    tracker.update_gauges()
    assert math.isnan(registry.get_sample_value("inspector_pass_score_median", {"camera": "cam1"}) or 0.0)
    for score in (0.6, 0.8, 1.0):
        tracker.deliver(with_score(scored_line.outcomes[0], score))
    tracker.update_gauges()
    value = {n: registry.get_sample_value(n, {"camera": "cam1"}) for n in (
        "inspector_pass_score_median", "inspector_pass_score_p99", "inspector_pass_score_drift_ratio",
        "inspector_score_threshold", "inspector_calibration_score_median")}  # fmt: skip
    assert value["inspector_pass_score_median"] == pytest.approx(0.8)
    assert value["inspector_pass_score_p99"] == pytest.approx(float(np.percentile([0.6, 0.8, 1.0], 99.0)))
    assert value["inspector_pass_score_drift_ratio"] == pytest.approx(1.6)
    assert (value["inspector_score_threshold"], value["inspector_calibration_score_median"]) == (2.0, 0.5)


def test_window_and_minimum_are_validated_naming_both_fields() -> None:
    with pytest.raises(ValueError, match=r"min_pass_scores \(50\) must not exceed window_pass_scores \(20\)"):
        DriftConfig(window_pass_scores=20)

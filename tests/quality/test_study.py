"""The calibration study's arithmetic on synthetic scores: thresholds per method, counts, rescaling, table."""

from __future__ import annotations

import numpy as np
import pytest

from inspector.model.calibration import gaussian_threshold, threshold_at_rate
from inspector.quality.study import (
    MODES,
    ORACLE,
    TAILS,
    Scores,
    Split,
    method_rows,
    parse_splits,
    table_lines,
)

RATE = 0.01
N_NORMAL = 400


def _normal(seed: int) -> Scores:
    rng = np.random.default_rng(seed)
    return Scores(rng.normal(10, 1, N_NORMAL), rng.normal(2, 0.2, N_NORMAL), rng.normal(1, 0.1, N_NORMAL))


def _test() -> tuple[Scores, np.ndarray, list[str]]:
    rng = np.random.default_rng(9)
    good = Scores(rng.normal(10, 1, 100), rng.normal(2, 0.2, 100), rng.normal(1, 0.1, 100))
    labels = np.array([0] * 100 + [1] * 20)
    types = ["good"] * 100 + ["scratch"] * 10 + ["dent"] * 10
    bad_max = np.concatenate([np.full(10, 5.0), np.full(10, 2.1)])  # the dents hide among the good
    return (
        Scores(np.concatenate([good.knn, np.full(20, 20.0)]), np.concatenate([good.map_max, bad_max]),
               np.concatenate([good.map_top_mean, bad_max / 2])),
        labels, types,
    )  # fmt: skip


def test_parse_splits_reads_each_kind_and_refuses_unknown_names() -> None:
    splits = parse_splits("leave_one_out, leave_m_out:7,k_fold:10")
    assert splits == [Split("leave_one_out"), Split("leave_m_out", m=7), Split("k_fold", folds=10)]
    assert [s.label for s in splits] == ["leave_one_out", "leave_m_out:7", "k_fold:10"]
    with pytest.raises(ValueError, match="unknown split 'bootstrap'"):
        parse_splits("bootstrap")


def test_every_method_gets_its_threshold_from_its_own_normal_scores_and_is_counted_on_the_tests() -> None:
    test, labels, types = _test()
    normals = {"leave_one_out": (_normal(1), [1.0, 2.0]), "k_fold:5": (_normal(2), [1.0, 2.0])}
    rows = method_rows(normals, test, [1.0, 2.0], labels, types, RATE)
    assert len(rows) == len(MODES) * (1 + len(normals) * len(TAILS))
    by = {(r.split, r.tail, r.mode): r for r in rows}
    r = by["k_fold:5", "empirical", "map_max"]
    assert r.threshold == threshold_at_rate(normals["k_fold:5"][0].map_max, RATE)
    assert r.false_rejects == int(np.count_nonzero(test.map_max[:100] > r.threshold))
    assert r.escapes_by_type["scratch"] == (0, 10)
    assert r.escapes == sum(e for e, _ in r.escapes_by_type.values()) == r.escapes_by_type["dent"][0] > 0
    g = by["leave_one_out", "gaussian", "map_max"]
    assert g.threshold == gaussian_threshold(normals["leave_one_out"][0].map_max, RATE)
    oracle = by[ORACLE, "empirical", "map_max"]
    assert oracle.false_rejects <= RATE * 100 and oracle.target_counts == (0, 3)


def test_a_splits_own_stage_scales_rescale_the_test_map_scores() -> None:
    test, labels, types = _test()
    normal = _normal(1)
    same = method_rows({"a": (normal, [1.0, 4.0])}, test, [1.0, 4.0], labels, types, RATE)
    # stage scales twice as large (geometric mean 2x): every fused map value halves
    halved = method_rows({"a": (normal, [2.0, 8.0])}, test, [1.0, 4.0], labels, types, RATE)
    doubled = Scores(test.knn, test.map_max * 0.5, test.map_top_mean * 0.5)
    direct = method_rows({"a": (normal, [1.0, 4.0])}, doubled, [1.0, 4.0], labels, types, RATE)
    for h, d, s in zip(halved[len(MODES) :], direct[len(MODES) :], same[len(MODES) :], strict=True):
        assert (h.false_rejects, h.escapes) == (d.false_rejects, d.escapes)
        if h.mode == "knn_pooled":
            assert (h.false_rejects, h.escapes) == (s.false_rejects, s.escapes)


def test_table_has_one_line_per_method_and_says_whether_it_is_inside_the_target() -> None:
    test, labels, types = _test()
    rows = method_rows({"leave_one_out": (_normal(1), None)}, test, None, labels, types, RATE)
    lines = table_lines(rows, {"pixel_auroc": 0.9}, "widget")
    assert lines[0] == "#### widget: pixel_auroc 0.9000"
    body = [line for line in lines if line.startswith(("| leave_one_out", f"| {ORACLE}"))]
    assert len(body) == len(rows)
    assert all(" | yes | " in line or " | no | " in line for line in body)
    assert any("dent " in line and "scratch 0/10" in line for line in body)

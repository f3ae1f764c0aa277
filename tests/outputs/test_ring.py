"""Tests for inspector.outputs.ring: the newest published outcomes per camera, bounded by count and bytes."""

from __future__ import annotations

import dataclasses

from inspector.outputs.ring import ResultsRing, outcome_bytes
from tests.support import ScoredLine

MIB = 1 << 20


def test_ring_keeps_the_newest_per_camera_and_finds_by_seq(scored_line: ScoredLine) -> None:
    ring = ResultsRing(per_camera=3, max_mb=1024)
    for outcome in scored_line.outcomes:
        ring.deliver(outcome)
    seqs = [o.seq for o in scored_line.outcomes]
    assert [ring.find("cam1", s) is not None for s in seqs] == [False] * (len(seqs) - 3) + [True] * 3
    latest = ring.latest("cam1")
    assert latest is not None and latest.seq == seqs[-1]
    assert ring.latest("other") is None
    assert ring.held_bytes == sum(outcome_bytes(o) for o in scored_line.outcomes[-3:])


def test_ring_forgets_the_oldest_first_beyond_its_memory_bound(scored_line: ScoredLine) -> None:
    each = outcome_bytes(scored_line.outcomes[0])
    ring = ResultsRing(per_camera=100, max_mb=2.5 * each / MIB)
    for outcome in scored_line.outcomes[:5]:
        ring.deliver(outcome)
    assert [o.seq for o in scored_line.outcomes[:5] if ring.find("cam1", o.seq)] == [3, 4]
    assert ring.held_bytes <= 2.5 * each


def test_ring_ignores_an_outcome_that_was_not_published(scored_line: ScoredLine) -> None:
    ring = ResultsRing(per_camera=3, max_mb=64)
    ring.deliver(dataclasses.replace(scored_line.outcomes[0], published=None))
    assert ring.latest("cam1") is None

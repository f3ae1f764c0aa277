"""Tests for inspector.core.records and names: outcomes that contradict their verdict are refused."""

from __future__ import annotations

import numpy as np
import pytest

from inspector.core.names import COMPUTE_STAGES, LATENCY_STAGES, VERDICTS
from inspector.core.records import Frame, Outcome

FRAME = Frame("cam1", 7, 1.0, 2.0, np.zeros((2, 2, 3), np.uint8), "A-7")


def test_scored_and_unscored_outcomes_carry_what_their_verdict_needs() -> None:
    passed = Outcome(FRAME, "PASS", score=0.5, threshold=1.0)
    late = Outcome(FRAME, "TIMEOUT", error="deadline_ms exceeded")
    assert (passed.camera, passed.seq, passed.error) == ("cam1", 7, None)
    assert (late.score, late.threshold, late.error) == (None, None, "deadline_ms exceeded")


@pytest.mark.parametrize(
    "fields",
    [
        {"verdict": "PASS"},  # no score
        {"verdict": "FAIL", "score": 2.0},  # no threshold
        {"verdict": "PASS", "score": 0.5, "threshold": 1.0, "error": "why"},
        {"verdict": "ERROR"},  # no reason
        {"verdict": "TIMEOUT", "error": ""},
    ],
)
def test_an_outcome_that_contradicts_its_verdict_is_refused_naming_the_frame(
    fields: dict[str, object],
) -> None:
    with pytest.raises(ValueError, match="camera cam1 seq 7"):
        Outcome(FRAME, **fields)  # type: ignore[arg-type]


def test_latency_stages_are_the_queue_the_compute_stages_encoding_and_end_to_end() -> None:
    assert LATENCY_STAGES == ("queue", *COMPUTE_STAGES, "encode", "end_to_end")
    assert VERDICTS == ("PASS", "REVIEW", "FAIL", "TIMEOUT", "ERROR")

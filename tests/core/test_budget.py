"""Tests for inspector.core.budget: the sliding-window restart budget."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inspector.core.budget import RestartBudget


def test_five_restarts_in_sixty_seconds_fit_and_the_sixth_does_not() -> None:
    budget = RestartBudget(5, 60.0)
    assert all(budget.record(float(t)) for t in range(5))
    assert not budget.record(5.0)
    assert budget.total == 6 and budget.describe() == "5 restarts within 60 s"


def test_restarts_older_than_the_window_no_longer_count() -> None:
    budget = RestartBudget(2, 10.0)
    assert budget.record(0.0) and budget.record(1.0)
    assert budget.record(10.5)  # the one at 0 fell out of the window
    assert budget.in_window(10.5) == 2
    assert not budget.record(10.6)


def test_a_budget_that_allows_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="budget >= 1"):
        RestartBudget(0, 60.0)


@given(st.lists(st.floats(min_value=0.0, max_value=1000.0), max_size=50), st.integers(1, 10))
def test_record_refuses_exactly_when_more_than_budget_restarts_lie_in_the_window(
    gaps: list[float], limit: int
) -> None:
    budget = RestartBudget(limit, 30.0)
    now, times = 0.0, []
    for gap in gaps:
        now += gap
        times.append(now)
        recent = [t for t in times if t > now - 30.0]
        assert budget.record(now) == (len(recent) <= limit)

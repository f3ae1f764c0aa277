"""A restart budget: at most N restarts within a sliding window of W seconds (pure; the clock is passed in)."""

from __future__ import annotations

from collections import deque


class RestartBudget:
    """Counts restarts in a sliding window; :meth:`record` says whether one more still fits the budget.

    Args:
        budget: restarts allowed within ``window_s``.
        window_s: the window's length in seconds.
    """

    def __init__(self, budget: int, window_s: float) -> None:
        if budget < 1 or window_s <= 0:
            raise ValueError(f"restart budget needs budget >= 1 and window_s > 0, got {budget}, {window_s}")
        self.budget = budget
        self.window_s = window_s
        self._times: deque[float] = deque()
        self.total = 0

    def record(self, now: float) -> bool:
        """Count a restart at monotonic time ``now``; False when it is more than the budget allows."""
        self.total += 1
        self._times.append(now)
        while self._times and self._times[0] <= now - self.window_s:
            self._times.popleft()
        return len(self._times) <= self.budget

    def in_window(self, now: float) -> int:
        """Restarts counted within the window ending at ``now``."""
        return sum(1 for t in self._times if t > now - self.window_s)

    def describe(self) -> str:
        """The budget in words, for log lines and error messages."""
        return f"{self.budget} restarts within {self.window_s:g} s"

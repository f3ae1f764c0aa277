"""Tests for the progress display of long commands when stderr is not a terminal."""

from __future__ import annotations

import io

import pytest

from inspector.cli.progress import PlainProgress, progress_bar


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_plain_progress_prints_a_start_line_then_at_most_one_per_interval_with_an_eta_and_an_end_line() -> (
    None
):
    out, clock = io.StringIO(), Clock()
    with PlainProgress(100, "features", out, interval_s=10.0, clock=clock) as bar:
        for _ in range(10):
            clock.now += 2.0
            bar.update(10)  # 10 images every 2 s: a line at 10 s, at 20 s (then done)
    assert out.getvalue().splitlines() == [
        "features: 100 img",
        "features: 50/100 img, 10 s, about 10 s left",
        "features: 100/100 img, 20 s",
    ]


def test_plain_progress_prints_nothing_more_after_an_error_so_the_error_is_the_last_line() -> None:
    out = io.StringIO()
    with pytest.raises(KeyboardInterrupt), PlainProgress(5, "calibration", out, clock=Clock()) as bar:
        bar.update(1)
        raise KeyboardInterrupt
    assert out.getvalue().splitlines() == ["calibration: 5 img"]


def test_progress_bar_is_plain_when_stderr_is_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    with progress_bar(3, "add") as bar:
        bar.update(3)
    assert isinstance(bar, PlainProgress)
    assert capsys.readouterr().err.splitlines()[0] == "add: 3 img"

"""Tests for inspector.ops.signals with real signals sent to a real child process."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator

import pytest

from inspector.core.names import EXIT_INTERRUPTED
from tests.support import REPO_ROOT

PROCESS_TIMEOUT_S = 120.0
# A command whose stop never finishes: the first signal is recorded, the loop keeps going, as a daemon
# that is still draining would.
STUCK_COMMAND = r"""
import sys, threading, time
from inspector.ops.signals import capture_signals
stops = []
with capture_signals(stops.append):
    print("ready", flush=True)
    while True:
        if stops:  # pop, not clear: a signal may append between the check and the print
            print("stop requested by", stops.pop(0), flush=True)
        time.sleep(0.01)
"""
# A command that stops when asked and shows the previous handlers come back afterwards.
CLEAN_COMMAND = r"""
import signal, threading
from inspector.ops.signals import capture_signals
stop = threading.Event()
before = signal.getsignal(signal.SIGTERM)
with capture_signals(lambda name: stop.set()):
    print("ready", flush=True)
    stop.wait()
print("stopped", signal.getsignal(signal.SIGTERM) is before, flush=True)
"""


class Child:
    """A Python child process whose stdout lines are read into a queue (so a missing line fails, never hangs)."""

    def __init__(self, code: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def line(self) -> str:
        """The next stdout line (fails after PROCESS_TIMEOUT_S)."""
        try:
            return self.lines.get(timeout=PROCESS_TIMEOUT_S)
        except queue.Empty:
            self.proc.kill()
            raise AssertionError(f"no line from the child within {PROCESS_TIMEOUT_S} s") from None

    def signal(self, sig: signal.Signals) -> None:
        """Send a signal."""
        self.proc.send_signal(sig)

    def exit_status_and_stderr(self) -> tuple[int, str]:
        """Wait for the exit (bounded); return the status and what went to stderr."""
        status = self.proc.wait(PROCESS_TIMEOUT_S)
        assert self.proc.stderr is not None
        return status, self.proc.stderr.read()

    def close(self) -> None:
        """Kill the child if a failed test left it running; close its pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(PROCESS_TIMEOUT_S)
        self._pump_thread.join(PROCESS_TIMEOUT_S)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def start() -> Iterator[Callable[[str], Child]]:
    """Start children that print "ready" once their handlers are installed; closed at teardown."""
    started: list[Child] = []

    def make(code: str) -> Child:
        started.append(child := Child(code))
        assert child.line() == "ready"
        return child

    yield make
    for child in started:
        child.close()


def test_a_second_sigint_forces_the_exit_while_the_first_only_asks_to_stop(
    start: Callable[[str], Child],
) -> None:
    child = start(STUCK_COMMAND)
    child.signal(signal.SIGINT)
    assert child.line() == "stop requested by SIGINT"
    child.signal(signal.SIGINT)
    status, err = child.exit_status_and_stderr()
    assert status == EXIT_INTERRUPTED and "exiting now" in err


def test_a_second_sigterm_only_repeats_the_request(start: Callable[[str], Child]) -> None:
    child = start(STUCK_COMMAND)
    for _ in range(2):
        child.signal(signal.SIGTERM)
        assert child.line() == "stop requested by SIGTERM"
    assert child.proc.poll() is None
    child.signal(signal.SIGINT)  # after a stop request: forced
    assert child.exit_status_and_stderr()[0] == EXIT_INTERRUPTED


def test_sigterm_stops_cleanly_and_the_previous_handlers_come_back(start: Callable[[str], Child]) -> None:
    child = start(CLEAN_COMMAND)
    child.signal(signal.SIGTERM)
    assert child.line() == "stopped True"
    assert child.exit_status_and_stderr()[0] == 0

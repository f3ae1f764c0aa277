"""Tests for inspector.ops.signals with real signals sent to a real child process."""

from __future__ import annotations

import signal
import subprocess
import sys

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
        if stops:
            print("stop requested by", stops[0], flush=True)
            stops.clear()
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


def start(code: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_a_second_sigint_forces_the_exit_while_the_first_only_asks_to_stop() -> None:
    proc = start(STUCK_COMMAND)
    assert proc.stdout is not None
    proc.send_signal(signal.SIGINT)
    assert proc.stdout.readline().strip() == "stop requested by SIGINT"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(PROCESS_TIMEOUT_S) == EXIT_INTERRUPTED
    assert "exiting now" in proc.communicate(timeout=PROCESS_TIMEOUT_S)[1]


def test_a_second_sigterm_only_repeats_the_request() -> None:
    proc = start(STUCK_COMMAND)
    assert proc.stdout is not None
    for _ in range(2):
        proc.send_signal(signal.SIGTERM)
        assert proc.stdout.readline().strip() == "stop requested by SIGTERM"
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)  # after a stop request: forced
    assert proc.wait(PROCESS_TIMEOUT_S) == EXIT_INTERRUPTED
    proc.communicate(timeout=PROCESS_TIMEOUT_S)


def test_sigterm_stops_cleanly_and_the_previous_handlers_come_back() -> None:
    proc = start(CLEAN_COMMAND)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=PROCESS_TIMEOUT_S)
    assert proc.returncode == 0 and out.strip() == "stopped True"

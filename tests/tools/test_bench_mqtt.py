"""Smoke test of tools/bench_mqtt.py: a small real run against its own mosquitto prints a rate per QoS level and
its ratio to a bare paho client."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.mosquitto import missing_reason
from tests.support import REPO_ROOT

TIMEOUT_S = 600
ROW = re.compile(
    r"^qos ([01]): 300 verdicts of (\d+) bytes:\s+(\d+) messages/s sustained .* = ([\d.]+)x a bare paho "
    r"client's (\d+)/s; deliver ([\d.]+) us each"
)


@pytest.mark.skipif(missing_reason() is not None, reason=missing_reason() or "")
def test_messages_per_second_are_measured_per_qos_level_against_a_bare_paho_client() -> None:
    args = [sys.executable, str(REPO_ROOT / "tools" / "bench_mqtt.py"), "--messages", "300", "--no-daemon"]
    done = subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stderr
    rows = {int(m[1]): m for line in done.stdout.splitlines() if (m := ROW.match(line))}
    assert set(rows) == {0, 1}, done.stdout
    for m in rows.values():
        size, rate, ratio, floor, deliver_us = int(m[2]), int(m[3]), float(m[4]), int(m[5]), float(m[6])
        assert size > 300 and rate > 0 and floor > 0 and deliver_us > 0
        assert ratio == pytest.approx(rate / floor, rel=0.02, abs=0.01)  # printed rounded

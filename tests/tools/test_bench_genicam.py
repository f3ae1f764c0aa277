"""Smoke test of tools/bench_genicam.py: a short real run against the fake GigE Vision camera it starts."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests import genicam
from tests.support import REPO_ROOT

pytestmark = pytest.mark.genicam

TIMEOUT_S = 900


def test_bench_prints_the_reference_rate_the_daemons_rates_with_ratios_and_capture_latency() -> None:
    reason = genicam.missing_reason()
    if reason is not None:
        pytest.skip(reason)
    args = [sys.executable, str(REPO_ROOT / "tools" / "bench_genicam.py"), "--fake", "--rate-hz", "5",
            "--duration-s", "4", "--warmup-s", "2"]  # fmt: skip
    with genicam.host_lock():
        done = subprocess.run(
            args, cwd=REPO_ROOT, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
        )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {line[:28].strip(): line[28:].split() for line in done.stdout.splitlines()}
    for name in ("arv-camera-test-0.8", "daemon: frames captured", "daemon: verdicts published"):
        rate, ratio = map(float, rows[name])
        assert rate > 0.0 and ratio > 0.0, (name, done.stdout)
    assert float(rows["arv-camera-test-0.8"][1]) == 1.0
    for latency in (
        "capture (arrival -> handed on)",
        "arrival -> model worker",
        "arrival -> verdict published",
    ):
        assert latency in done.stdout

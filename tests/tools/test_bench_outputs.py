"""Smoke test of tools/bench_outputs.py: a tiny real run prints every row with its ratio to the bus publish."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support import REPO_ROOT

TOOL = REPO_ROOT / "tools" / "bench_outputs.py"
TIMEOUT_S = 300
ROWS = ("bus publish (reference)", "deliver: drift", "deliver: results ring", "deliver: live view",
        "deliver: archive (queue put)", "off path: archive record (write + fsync)")  # fmt: skip


def test_bench_outputs_prints_each_output_as_a_ratio_to_the_bus_publish() -> None:
    args = [sys.executable, str(TOOL), "--frame", "320x240", "--repeats", "10"]
    done = subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stderr
    table = {}
    for line in done.stdout.splitlines():
        fields = line.split()
        if (
            len(fields) >= 3
            and fields[-1].replace(".", "").isdigit()
            and fields[-2].replace(".", "").isdigit()
        ):
            table[line[:45].strip()] = (float(fields[-2]), float(fields[-1]))
    assert set(ROWS) <= set(table), done.stdout
    reference = table["bus publish (reference)"][0]
    assert table["bus publish (reference)"][1] == 1.0
    for name, (us, ratio) in table.items():
        assert us > 0.0 and ratio == pytest.approx(us / reference, rel=1e-3, abs=2e-3), (
            name
        )  # printed rounded
    assert "every output's deliver together" in done.stdout

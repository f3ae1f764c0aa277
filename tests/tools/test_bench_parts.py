"""Smoke test of tools/bench_parts.py: a small real run on SQLite and PostgreSQL prints a rate for each."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.postgres import PostgresServer
from tests.support import REPO_ROOT

TIMEOUT_S = 600
RATE = re.compile(r"^(sqlite|postgresql)\s+300 rows:\s+(\d+) rows/s sustained")


def test_rows_per_second_are_measured_into_both_backends(postgres: PostgresServer, tmp_path: Path) -> None:
    args = [sys.executable, str(REPO_ROOT / "tools" / "bench_parts.py"), "--rows", "300", "--no-daemon",
            "--postgres-url", postgres.database(), "--password-file", str(postgres.password_file(tmp_path))]  # fmt: skip
    done = subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stderr
    rates = {m[1]: int(m[2]) for line in done.stdout.splitlines() if (m := RATE.match(line))}
    assert set(rates) == {"sqlite", "postgresql"} and all(r > 0 for r in rates.values())

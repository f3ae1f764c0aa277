"""Parts database benchmark: sustained rows/s through the writer into SQLite (and PostgreSQL), and what the parts
sink adds to the daemon's capture-to-publish p99, with the sink off and on in one run.

    .venv/bin/python tools/bench_parts.py
    .venv/bin/python tools/bench_parts.py --postgres-url postgresql+psycopg://inspector@127.0.0.1:5432/parts \
        --password-file /tmp/pw --rows 50000
"""

from __future__ import annotations

import inspector as _package  # noqa: F401 - first: sets OMP_WAIT_POLICY before torch loads

# isort: split

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench_daemon import (
    add_sink_phase_args,
    isolated_phase,
    sink_phase_base,
)

from inspector.config.parts import PartsConfig
from inspector.records.schema import PartRecord
from inspector.records.spool import Spool
from inspector.records.writer import PartsWriter

POLL_S = 0.01
WAIT_S = 600.0
PERCENTILE_99 = 99
BOOT = "b" * 32


class Events:
    """Counts what the writer reports, and each batch's transaction time."""

    def __init__(self) -> None:
        self.rows = 0
        self.seconds: list[float] = []
        self.other: dict[str, int] = {}

    def written(self, count: int, seconds: float) -> None:
        self.rows += count
        self.seconds.append(seconds)

    def spooled(self, count: int) -> None:
        self.other["spooled"] = self.other.get("spooled", 0) + count

    def replayed(self, count: int) -> None:
        self.other["replayed"] = self.other.get("replayed", 0) + count

    def dropped(self, reason: str, count: int) -> None:
        self.other[f"dropped_{reason}"] = self.other.get(f"dropped_{reason}", 0) + count

    def database_up(self, up: bool) -> None:
        """Nothing to count."""


def record(i: int, t0: datetime) -> PartRecord:
    """The ``i``-th PASS record of one camera, one every 100 ms from ``t0``."""
    at = t0 + timedelta(milliseconds=100 * i)
    return PartRecord(
        boot_id=BOOT, camera="cam0", seq=i, verdict="PASS", captured_at=at,
        published_at=at + timedelta(milliseconds=80), part_id=f"P-{i:09d}", product="flange",
        gallery="a" * 64, score=1.0, threshold=2.0, defect_area_px=0, end_to_end_ms=80.0, age_ms=80.0,
    )  # fmt: skip


def records(n: int) -> list[PartRecord]:
    """``n`` records (made before timing starts)."""
    t0 = datetime.now(UTC)
    return [record(i, t0) for i in range(n)]


def rows_per_second(config: PartsConfig, n: int, spool: Path) -> tuple[float, float, float]:
    """(rows/s from the first submit to the last commit, mean and p99 ms of one batch's transaction)."""
    events = Events()
    assert config.url is not None
    writer = PartsWriter(config, config.url, Spool(spool), events)
    writer.start()
    batch = records(n)
    while writer.degraded_reason is not None:  # connected and migrated
        time.sleep(POLL_S)
    start = time.perf_counter()
    for record in batch:
        writer.submit(record)
    deadline = time.monotonic() + WAIT_S
    while events.rows < n:
        if time.monotonic() > deadline or events.other:
            raise RuntimeError(f"only {events.rows} of {n} rows written: {events.other}")
        time.sleep(POLL_S)
    elapsed = time.perf_counter() - start
    writer.close(WAIT_S)
    ms = sorted(s * 1000.0 for s in events.seconds)
    p99 = ms[min(len(ms) - 1, int(len(ms) * PERCENTILE_99 / 100))]
    return n / elapsed, statistics.fmean(ms), p99


def daemon_phases(args: argparse.Namespace, work: Path) -> None:
    """The daemon with the parts sink off and on, the same paced cameras: end-to-end and overhead p99."""
    base = sink_phase_base(args, work)
    off = base.model_copy(update={"parts": PartsConfig(enabled=False)})
    on = base.model_copy(
        update={"parts": PartsConfig(url=f"sqlite:///{work / 'daemon-parts.db'}", spool_dir=work / "spool-d")}
    )
    results = [
        isolated_phase(label, cfg, args, args.fps * args.cameras) for label, cfg in (("off", off), ("on", on))
    ]
    for ph in results:
        print(
            f"daemon, parts sink {ph.label:<3}: published {ph.throughput_fps:5.1f} fps, end-to-end p50 "
            f"{ph.p50_ms:.1f} ms, p99 {ph.p99_ms:.1f} ms; capture-to-publish minus compute p50 "
            f"{ph.overhead_p50_ms:.2f} ms, p99 {ph.overhead_p99_ms:.2f} ms"
        )
    added = results[1].overhead_p99_ms - results[0].overhead_p99_ms
    print(
        f"the parts sink adds {added:+.2f} ms to the p99 of capture-to-publish minus compute (aim: <= 1 ms)"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=20_000, help="rows written per backend (default 20000)")
    p.add_argument("--postgres-url", default=None, help="also measure this (empty) PostgreSQL database")
    p.add_argument("--password-file", type=Path, default=None, help="its password file")
    add_sink_phase_args(p)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Print rows/s per backend, then the daemon's p99 with the sink off and on."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_parts_") as tmp:
        work = Path(tmp)
        backends = [("sqlite", PartsConfig(url=f"sqlite:///{work / 'parts.db'}"))]
        if args.postgres_url:
            backends.append(
                ("postgresql", PartsConfig(url=args.postgres_url, password_file=args.password_file))
            )
        for name, config in backends:
            config = config.model_copy(update={"queue_size": args.rows + 1})
            rate, mean_ms, p99_ms = rows_per_second(config, args.rows, work / f"spool-{name}")
            print(
                f"{name:<10} {args.rows} rows: {rate:8.0f} rows/s sustained (aim >= 2000); one batch's "
                f"transaction mean {mean_ms:.1f} ms, p99 {p99_ms:.1f} ms"
            )
        if not args.postgres_url:
            print("postgresql: not measured (give --postgres-url and --password-file)")
        if not args.no_daemon:
            daemon_phases(args, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())

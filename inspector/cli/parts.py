"""``inspector parts query|summary``: what inspection said about a part, and counts per shift, product, camera."""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inspector.config.load import load_config
from inspector.core.errors import InspectorError
from inspector.core.names import EXIT_OK, VERDICTS

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from inspector.config.root import InspectorConfig

SubParsers = argparse._SubParsersAction  # argparse exposes no public name for it
CSV_FIELDS = ("id", "captured_at", "camera", "seq", "part_id", "product", "verdict", "score", "threshold",
              "defect_area_px", "error", "gallery", "boot_id", "published_at", "age_ms", "archive_record")  # fmt: skip
TEXT_FIELDS = ("captured_at", "camera", "seq", "part_id", "product", "verdict", "score")
SUMMARY_DEFAULT_HOURS = 24


class PartsCommandError(InspectorError):
    """The parts database is off for this config, or a time cannot be read."""


def open_database(config: InspectorConfig) -> Engine:
    """The parts database of a config (an error saying so when it is off)."""
    from inspector.records.store import database_url, open_engine

    url = database_url(config.parts, os.environ)
    if url is None:
        raise PartsCommandError(
            "the parts database is off for this config: set [parts] url (the daemon's default, "
            "$STATE_DIRECTORY/parts.db, exists only under systemd)"
        )
    return open_engine(config.parts, url)


def parse_option_time(text: str | None, config: InspectorConfig, what: str) -> datetime | None:
    """A command-line time (ISO 8601; naive: the plant's time zone), or None when not given."""
    from zoneinfo import ZoneInfo

    from inspector.records.queries import parse_time

    if text is None:
        return None
    try:
        return parse_time(text, ZoneInfo(config.parts.timezone))
    except ValueError:
        raise PartsCommandError(f"{what} {text!r}: not an ISO 8601 date or time (2026-12-07T06:00)") from None


def cmd_parts_query(args: argparse.Namespace) -> int:
    """Print the records that match, newest first: a table, JSON lines (bus field names) or CSV."""
    from inspector.records.queries import PartsFilter, find_records

    config = load_config(args.config)
    found = PartsFilter(
        part_id=args.part_id, camera=args.camera, product=args.product, verdict=args.verdict,
        since=parse_option_time(args.since, config, "--since"), until=parse_option_time(args.until, config, "--until"), limit=args.limit,
    )  # fmt: skip
    engine = open_database(config)
    try:
        with engine.connect() as conn:
            records = find_records(conn, found)
    finally:
        engine.dispose()
    _print_records(records, "json" if args.json else "csv" if args.csv else "text")
    return EXIT_OK


def _print_records(records: list[dict[str, Any]], form: str) -> None:
    if form == "json":
        for doc in records:
            print(json.dumps(doc))
        return
    if form == "csv":
        writer = csv.DictWriter(sys.stdout, CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
        return
    rows = [[("" if doc[k] is None else str(doc[k])) for k in TEXT_FIELDS] for doc in records]
    _table(list(TEXT_FIELDS), rows)
    print(f"{len(records)} record(s)")


def _table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    for row in (header, *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def cmd_parts_summary(args: argparse.Namespace) -> int:
    """Counts and rates per shift (or hour, day), product and camera, as a table or JSON lines."""
    from zoneinfo import ZoneInfo

    from inspector.records.queries import summarise

    config = load_config(args.config)
    until = parse_option_time(args.until, config, "--until") or datetime.now(UTC)
    since = parse_option_time(args.since, config, "--since") or until - timedelta(hours=SUMMARY_DEFAULT_HOURS)
    engine = open_database(config)
    try:
        with engine.connect() as conn:
            rows = summarise(
                conn, since, until, args.by, ZoneInfo(config.parts.timezone), config.parts.shifts
            )
    finally:
        engine.dispose()
    docs = [r.document() for r in rows]
    if args.json:
        for doc in docs:
            print(json.dumps(doc))
        return EXIT_OK
    header = [args.by, "product", "camera", "total", "pass", "fail", "timeout", "error", "fail %"]
    _table(header, [[d["bucket"], d["product"], d["camera"], str(d["total"]), str(d["pass"]), str(d["fail"]),
                     str(d["timeout"]), str(d["error"]), f"{100 * d['fail_rate']:.2f}"] for d in docs])  # fmt: skip
    print(f"{sum(d['total'] for d in docs)} parts from {since.isoformat()} to {until.isoformat()} "
          f"({config.parts.timezone})")  # fmt: skip
    return EXIT_OK


def add_parts_commands(sub: SubParsers[argparse.ArgumentParser]) -> None:
    """Register ``parts query`` and ``parts summary``."""
    parts = sub.add_parser("parts", help="query the parts database (one record per inspected part)")
    cmds = parts.add_subparsers(dest="parts_command", required=True, metavar="{query,summary}")
    q = cmds.add_parser("query", help="records by part id, camera, product, verdict and time, newest first")
    q.add_argument("--config", type=Path, required=True, help="the daemon's config file ([parts] is read)")
    q.add_argument("--part-id", default=None, help="only this part id")
    q.add_argument("--camera", default=None, help="only this camera")
    q.add_argument("--product", default=None, help="only this product")
    q.add_argument("--verdict", choices=VERDICTS, default=None, help="only this verdict")
    q.add_argument("--since", default=None, help="from this time (ISO 8601; local [parts] timezone if naive)")
    q.add_argument("--until", default=None, help="before this time (ISO 8601)")
    q.add_argument("--limit", type=int, default=100, help="at most this many records (default 100)")
    form = q.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="JSON lines with the bus header's field names")
    form.add_argument("--csv", action="store_true", help="CSV with a header row")
    q.set_defaults(func=cmd_parts_query)
    s = cmds.add_parser("summary", help="verdict counts and rates per shift, hour or day, product and camera")
    s.add_argument("--config", type=Path, required=True, help="the daemon's config file ([parts] is read)")
    s.add_argument("--since", default=None, help="from this time (ISO 8601; default: 24 hours ago)")
    s.add_argument("--until", default=None, help="before this time (ISO 8601; default: now)")
    s.add_argument("--by", choices=("shift", "hour", "day"), default="shift", help="bucket (default shift)")
    s.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    s.set_defaults(func=cmd_parts_summary)

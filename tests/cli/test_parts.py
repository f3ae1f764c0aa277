"""Tests for ``inspector parts query|summary`` on both backends: JSON lines, CSV, tables, errors."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from inspector.cli.main import main
from inspector.config.parts import PartsConfig
from inspector.core.names import EXIT_FAILURE, EXIT_OK
from inspector.records.store import insert_records, migrate, open_engine
from tests.records.records import record


def _config(parts: PartsConfig, tmp_path: Path) -> Path:
    lines = [f'url = "{parts.url}"', 'timezone = "Europe/Berlin"']
    if parts.password_file is not None:
        lines.append(f'password_file = "{parts.password_file}"')
    path = tmp_path / "inspector.toml"
    path.write_text("[parts]\n" + "\n".join(lines) + "\n")
    return path


@pytest.fixture
def config(parts_db: PartsConfig, tmp_path: Path) -> Path:
    assert parts_db.url is not None
    engine = open_engine(parts_db, parts_db.url)
    try:
        migrate(engine)
        with engine.begin() as conn:
            insert_records(conn, [record(i, verdict="FAIL" if i == 2 else "PASS") for i in range(5)])
    finally:
        engine.dispose()
    return _config(parts_db, tmp_path)


def test_query_by_part_id_prints_json_lines_with_the_bus_field_names(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["parts", "query", "--config", str(config), "--part-id", "P-000002", "--json"]) == EXIT_OK
    (line,) = capsys.readouterr().out.splitlines()
    doc = json.loads(line)
    assert (doc["part_id"], doc["verdict"], doc["seq"], doc["camera"]) == ("P-000002", "FAIL", 2, "cam1")


def test_query_as_csv_and_as_a_table_newest_first(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["parts", "query", "--config", str(config), "--csv", "--since", "2026-12-07T06:30:02"])
        == EXIT_OK
    )
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["seq"] for r in rows] == ["4", "3", "2"]  # 06:30:02 Berlin is 05:30:02 UTC
    assert main(["parts", "query", "--config", str(config), "--verdict", "FAIL"]) == EXIT_OK
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["captured_at", "camera", "seq", "part_id", "product", "verdict", "score"]
    assert "P-000002" in out[1] and out[-1] == "1 record(s)"


def test_summary_by_shift_as_a_table_and_as_json(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    window = ["--since", "2026-12-07", "--until", "2026-12-08"]
    assert main(["parts", "summary", "--config", str(config), *window, "--json"]) == EXIT_OK
    (doc,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (doc["bucket"], doc["total"], doc["pass"], doc["fail"]) == ("2026-12-07 06:00", 5, 4, 1)
    assert main(["parts", "summary", "--config", str(config), *window, "--by", "day"]) == EXIT_OK
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["day", "product", "camera", "total"] and "20.00" in out[1]


def test_a_config_without_a_database_or_with_a_bad_time_says_so(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    off = tmp_path / "off.toml"
    off.write_text("[parts]\nenabled = false\n")
    assert main(["parts", "query", "--config", str(off)]) == EXIT_FAILURE
    assert "the parts database is off for this config" in capsys.readouterr().err
    assert main(["parts", "query", "--config", str(config), "--since", "monday"]) == EXIT_FAILURE
    assert "--since 'monday': not an ISO 8601" in capsys.readouterr().err

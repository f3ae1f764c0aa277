"""The parts dashboard's SQL runs on a real PostgreSQL parts database and shows the latest rejects."""

from __future__ import annotations

import json
import re
from pathlib import Path

from sqlalchemy import text

from inspector.config.parts import PartsConfig
from inspector.records.store import insert_records, migrate, open_engine
from tests.postgres import PostgresServer
from tests.records.records import record
from tests.support import REPO_ROOT

DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "inspector-parts-dashboard.json"
RANGE = ("2026-12-07T00:00:00Z", "2026-12-08T00:00:00Z")


def as_sql(grafana: str) -> str:
    """Grafana's PostgreSQL macros as plain SQL over a fixed time range."""
    sql = re.sub(r"\$__timeFilter\((\w+)\)", rf"\1 BETWEEN '{RANGE[0]}' AND '{RANGE[1]}'", grafana)
    return re.sub(r"\$__timeGroupAlias\((\w+), '1h'\)", r"date_trunc('hour', \1) AS time", sql)


def test_every_panel_query_runs_and_the_rejects_table_lists_only_rejects_newest_first(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    config = PartsConfig(url=postgres.database(), password_file=postgres.password_file(tmp_path))
    engine = open_engine(config, str(config.url))
    try:
        migrate(engine)
        verdicts = ["PASS", "FAIL", "PASS", "ERROR", "TIMEOUT", "PASS"]
        with engine.begin() as conn:
            insert_records(conn, [record(i, verdict=v) for i, v in enumerate(verdicts)])
        panels = json.loads(DASHBOARD.read_text())["panels"]
        results = {}
        with engine.connect() as conn:
            for panel in panels:
                for target in panel["targets"]:
                    results[panel["title"]] = conn.execute(text(as_sql(target["rawSql"]))).all()
    finally:
        engine.dispose()
    rejects = results["Latest rejects (FAIL, TIMEOUT, ERROR)"]
    assert [(r.part_id, r.verdict) for r in rejects] == [
        ("P-000004", "TIMEOUT"), ("P-000003", "ERROR"), ("P-000001", "FAIL"),
    ]  # fmt: skip
    assert sorted((r.metric, r.value) for r in results["Verdicts per hour"]) == [
        ("ERROR", 1), ("FAIL", 1), ("PASS", 3), ("TIMEOUT", 1),
    ]  # fmt: skip

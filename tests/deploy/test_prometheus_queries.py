"""The Grafana dashboard, and its and the alert rules' PromQL run by a real Prometheus scraping the daemon."""

from __future__ import annotations

import json
import math
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from inspector.demo.data import write_demo_video
from inspector.ops.metrics import InspectorMetrics
from tests.support import REPO_ROOT, free_port
from tests.toml_config import Table, tcp, video_camera, write_daemon_config

ALERTS = REPO_ROOT / "deploy" / "prometheus" / "alerts.yml"
PROMETHEUS_YML = REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "inspector-dashboard.json"
SCRAPE_INTERVAL = "1s"
# Grafana's $__rate_interval is at least 4 scrape intervals; 30 s also rides out scrapes that time out while
# the 2-core test machine is saturated.
RATE_INTERVAL = "30s"
MIN_SCRAPES = 12  # samples per series before querying, so every rate() window holds several
START_TIMEOUT_S = 300.0  # generous: daemon start-up and enough scrapes on a busy 2-core machine
STOP_TIMEOUT_S = 30.0
HTTP_TIMEOUT_S = 5.0
GRID_COLUMNS = 24
POLL_S = 0.25
VIDEO_FRAMES = 40
VIDEO_FPS = 10.0
VIDEO_SIDE_PX = 160  # the size of conftest's synthetic gallery images
DEFECT_EVERY = 4
DRIFT_MIN_PASS_SCORES = 5  # the drift gauges have values within the test's first seconds
DRIFT_PANEL = "PASS score drift (median / calibration median)"
DRIFT_RULE = "InspectorScoreDrift"
# Panels allowed to return no data, with the reason. GPU memory comes from NVIDIA's dcgm-exporter, which
# only runs on GPU machines; its query must still parse and evaluate.
NO_DATA_EXPECTED = {"GPU memory": "dcgm-exporter (DCGM_FI_DEV_FB_*) runs only on GPU machines"}
EXTERNAL_METRICS = re.compile(r"^(up|DCGM_\w+)$")
METRIC_NAME = re.compile(r"\b(?:inspector_\w+|process_\w+|DCGM_\w+|camera:inspector_\w+:\w+)")
SAMPLE_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
GRAFANA_VARIABLES = {"$__rate_interval": RATE_INTERVAL, "$camera": ".*", "$instance": ".*"}


class GalleryFile(Protocol):
    """What this file uses of conftest's ``synthetic_gallery`` fixture (a calibrated demo gallery)."""

    path: Path


@dataclass(frozen=True)
class Query:
    """One PromQL expression and where it comes from."""

    source: str  # "panel <title>", "variable <name>", "rule <name>"
    expr: str


def grafana_to_promql(expr: str) -> str:
    """Substitute the dashboard's variables as Grafana does with "All" selected."""
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unknown Grafana variable left in {expr!r}"
    return expr


def dashboard_queries() -> list[Query]:
    """Every panel target of the dashboard, variables substituted."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [
        Query(f"panel {panel['title']}", grafana_to_promql(target["expr"]))
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def variable_queries() -> list[tuple[str, str, str]]:
    """(variable, PromQL selector, label) of every ``label_values(selector, label)`` variable."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    out = []
    for var in dashboard["templating"]["list"]:
        if var["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", var["definition"])
        assert match, f"variable {var['name']}: unsupported query {var['definition']!r}"
        out.append((var["name"], grafana_to_promql(match.group(1)), match.group(2)))
    return out


def rule_queries() -> list[Query]:
    """Every recording and alerting rule expression."""
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    return [
        Query(f"rule {rule.get('alert') or rule['record']}", rule["expr"])
        for group in groups
        for rule in group["rules"]
    ]


def referenced_metrics() -> set[str]:
    """Metric names used by the dashboard and the rules, recording rules' own names excluded."""
    names = {n for q in dashboard_queries() + rule_queries() for n in METRIC_NAME.findall(q.expr)}
    names |= {n for _, selector, _ in variable_queries() for n in METRIC_NAME.findall(selector)}
    return {n for n in names if not n.startswith("camera:")}


def test_every_metric_queried_is_exported_by_inspector_metrics() -> None:
    # Runs without Prometheus: a renamed metric breaks this before it silently empties a panel.
    registry = CollectorRegistry()
    InspectorMetrics(registry)
    exported = {
        family.name + suffix
        for family in registry.collect()
        for suffix in SAMPLE_SUFFIXES.get(family.type, ("",))
    }
    missing = {n for n in referenced_metrics() if n not in exported and not EXTERNAL_METRICS.match(n)}
    assert not missing, f"queried but not exported: {sorted(missing)}"


class Prometheus:
    """A real Prometheus server on 127.0.0.1 with a temporary storage folder."""

    def __init__(self, binary: str, folder: Path, target: str) -> None:
        """Start it with the shipped prometheus.yml and alerts.yml, scraping only ``target`` every second."""
        self.target = target
        config = yaml.safe_load(PROMETHEUS_YML.read_text(encoding="utf-8"))
        job = next(job for job in config["scrape_configs"] if job["job_name"] == "inspector")
        job["static_configs"] = [{"targets": [target], "labels": {"line": "test"}}]
        config["scrape_configs"] = [job]
        config["global"].update(
            scrape_interval=SCRAPE_INTERVAL,
            scrape_timeout=SCRAPE_INTERVAL,
            evaluation_interval=SCRAPE_INTERVAL,
        )
        config["rule_files"] = [str(ALERTS)]
        config.pop("alerting")
        config_file = folder / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.port = free_port()
        self.log = folder / "prometheus.log"
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config_file}",
                    f"--storage.tsdb.path={folder / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def get(self, path: str, **params: str) -> Any:
        """GET an API path and return the decoded JSON body (error bodies included)."""
        url = f"http://127.0.0.1:{self.port}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:  # 400/422 carry the PromQL error as JSON
            return json.loads(exc.read())

    def query(self, expr: str) -> dict[str, Any]:
        """Instant query through /api/v1/query."""
        body: dict[str, Any] = self.get("/api/v1/query", query=expr)
        return body

    def wait_for(self, expr: str, what: str) -> None:
        """Poll until ``expr`` returns a non-empty result."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"prometheus exited: {self.log.read_text()[-2000:]}"
            try:
                if self.query(expr).get("data", {}).get("result"):
                    return
            except (urllib.error.URLError, ConnectionError):
                pass  # not listening yet
            time.sleep(POLL_S)
        raise AssertionError(f"timed out waiting for {what} ({expr}); log: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        """SIGTERM and wait."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT_S)


def daemon_config(folder: Path, gallery: Path, video: Path, metrics_port: int) -> Path:
    """A TOML config: a looping demo video camera, a camera that never connects, free ports."""
    ghost: Table = {
        "name": "ghost",
        "source": "http://127.0.0.1:9/none.mjpg",
        "open_timeout_s": 0.5,
        "retry_max_s": 1.0,
    }
    return write_daemon_config(
        folder / "inspector.toml",
        root={},
        cameras=[video_camera("line", video, VIDEO_FPS), ghost],
        worker={"gallery": gallery},
        batching={"max_batch": 4},
        bus={"bind": tcp(free_port())},
        metrics={"port": metrics_port},
        archive={"directory": folder / "archive"},
        drift={"min_pass_scores": DRIFT_MIN_PASS_SCORES},
    )


@pytest.fixture(scope="module")
def scraped_daemon(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    """``inspector run`` on a demo video, scraped by a real Prometheus every second until enough samples."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip(
            "prometheus not found: install Debian package 'prometheus' (apt-get install -y prometheus)"
        )
    synthetic_gallery: GalleryFile = request.getfixturevalue("synthetic_gallery")  # slow: after the skip
    tmp_path = tmp_path_factory.mktemp("scraped")
    video = tmp_path / "line.avi"
    write_demo_video(video, VIDEO_FRAMES, VIDEO_FPS, DEFECT_EVERY, VIDEO_SIDE_PX, seed=5)
    metrics_port = free_port()
    config = daemon_config(tmp_path, synthetic_gallery.path, video, metrics_port)
    daemon_log = tmp_path / "daemon.log"
    with daemon_log.open("w") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "inspector.cli", "run", "--config", str(config)],
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    prometheus = Prometheus(binary, tmp_path, f"127.0.0.1:{metrics_port}")
    try:
        prometheus.wait_for("inspector_ready == 1", "the daemon to be scraped as ready")
        prometheus.wait_for(f"count_over_time(inspector_ready[1m]) >= {MIN_SCRAPES}", "enough scrapes")
        verdicts = f'increase(inspector_verdicts_total{{camera="line"}}[{RATE_INTERVAL}]) > 0'
        prometheus.wait_for(verdicts, "verdicts in the last rate window")
        wait_for_panel_data(prometheus)
        yield prometheus
    finally:
        prometheus.stop()
        daemon.send_signal(signal.SIGTERM)
        try:
            code = daemon.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            daemon.kill()
            code = daemon.wait(STOP_TIMEOUT_S)
    assert code == 0, f"daemon exit {code}; log tail: {daemon_log.read_text()[-3000:]}"


def panels_without_data(prom: Prometheus) -> list[str]:
    """Dashboard queries (other than the ones expected empty here) that return no finite value yet."""
    return [
        f"{query.source}: {query.expr}"
        for query in dashboard_queries()
        if query.source.removeprefix("panel ") not in NO_DATA_EXPECTED
        and not finite_values(prom.query(query.expr))
    ]


def wait_for_panel_data(prom: Prometheus) -> None:
    """Poll until every panel has data: the scraped series need enough samples for every rate() window,
    and on a busy machine that takes a varying number of scrapes. The bound only turns a hang into a
    failure; the test that follows names the panels still empty."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while panels_without_data(prom) and time.monotonic() < deadline:
        time.sleep(POLL_S)


def finite_values(result: dict[str, Any]) -> list[float]:
    """Finite sample values of an instant-query vector or scalar result."""
    data = result["data"]
    if data["resultType"] == "scalar":
        return [v for v in [float(data["result"][1])] if math.isfinite(v)]
    return [float(s["value"][1]) for s in data["result"] if math.isfinite(float(s["value"][1]))]


def test_prometheus_runs_every_dashboard_and_rule_query_against_the_daemon(
    scraped_daemon: Prometheus,
) -> None:
    prom = scraped_daemon
    failures: list[str] = []
    for query in dashboard_queries() + rule_queries():
        result = prom.query(query.expr)
        if result.get("status") != "success":
            failures.append(f"{query.source}: {result.get('errorType')}: {result.get('error')}")
    assert not failures, "\n".join(failures)

    no_data = panels_without_data(prom)
    scrapes = prom.query(f"count_over_time(up[{RATE_INTERVAL}]) or sum_over_time(up[{RATE_INTERVAL}])")
    assert not no_data, f"panels without data (recent scrapes: {scrapes['data']['result']}):\n" + "\n".join(
        no_data
    )

    for name, selector, label in variable_queries():
        series = prom.query(selector)["data"]["result"]
        assert series and all(label in s["metric"] for s in series), f"variable {name}: no {label} values"
    cameras = {s["metric"]["camera"] for s in prom.query("inspector_camera_up")["data"]["result"]}
    assert cameras == {"line", "ghost"}
    # The drift panel shows the line camera near the gallery's world (same synthetic parts and camera).
    (drift,) = [q for q in dashboard_queries() if q.source == f"panel {DRIFT_PANEL}"]
    ratios = {s["metric"]["camera"]: float(s["value"][1]) for s in prom.query(drift.expr)["data"]["result"]}
    assert 0.0 < ratios["line"] < math.inf, ratios

    # Names the daemon declares (# TYPE), with or without samples yet (no drop so far, for instance).
    with urllib.request.urlopen(f"http://{prom.target}/metrics", timeout=HTTP_TIMEOUT_S) as response:
        families = list(text_string_to_metric_families(response.read().decode("utf-8")))
    exported = {f.name + suffix for f in families for suffix in SAMPLE_SUFFIXES.get(f.type, ("",))}
    missing = {n for n in referenced_metrics() if n not in exported and not EXTERNAL_METRICS.match(n)}
    assert not missing, f"queried but not exported by the daemon: {sorted(missing)}"


def test_prometheus_loads_and_evaluates_every_rule_without_error(scraped_daemon: Prometheus) -> None:
    prom = scraped_daemon
    expected = {q.source.removeprefix("rule ") for q in rule_queries()}
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        rules = [r for g in prom.get("/api/v1/rules")["data"]["groups"] for r in g["rules"]]
        evaluated = [r for r in rules if not r.get("lastEvaluation", "").startswith("0001-")]
        if len(evaluated) == len(expected) or time.monotonic() > deadline:
            break
        time.sleep(POLL_S)
    assert {r["name"] for r in rules} == expected and DRIFT_RULE in expected
    unhealthy = [f"{r['name']}: {r['health']} {r.get('lastError', '')}" for r in rules if r["health"] != "ok"]
    assert not unhealthy, unhealthy
    assert len(evaluated) == len(expected)
    # The ghost camera never connects: its camera-down alert is at least pending (it fires after 1 minute).
    alerts = prom.get("/api/v1/alerts")["data"]["alerts"]
    assert any(
        a["labels"]["alertname"] == "InspectorCameraDown" and a["labels"]["camera"] == "ghost" for a in alerts
    )


def dashboard_panels() -> list[dict[str, Any]]:
    """Every panel of the dashboard (rows included)."""
    panels: list[dict[str, Any]] = json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]
    return panels


def test_dashboard_is_importable_with_datasource_and_camera_variables() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["id"] is None and dashboard["uid"] == "inspector-main"
    assert "__inputs" not in dashboard  # imports without a mapping step; the data source is a variable
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    camera = variables["camera"]
    assert camera["includeAll"] and camera["multi"] and camera["allValue"] == ".*"
    assert camera["definition"].startswith("label_values(inspector_camera_up")
    ids = [p["id"] for p in dashboard_panels()]
    assert len(ids) == len(set(ids))


def test_dashboard_panels_use_the_datasource_variable_and_tile_without_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard_panels():
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= GRID_COLUMNS, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"] and target["expr"].strip(), panel["title"]


def test_dashboard_covers_every_view_the_line_needs() -> None:
    titles = {p["title"] for p in dashboard_panels()}
    required = {
        "Frames per second per camera", "Verdict rate", "FAIL share per camera", "Stage latency p50 / p99",
        "End-to-end latency p50 / p99 (capture to publish)", "Queue depth", "Drops by reason", "Camera up",
        "Camera reconnects", "Batch size", "Anomaly score distribution", "GPU memory", DRIFT_PANEL,
        "PASS scores against the threshold", "Defect archive",
    }  # fmt: skip
    assert required <= titles, sorted(required - titles)
    camera_filtered = [
        t["expr"] for p in dashboard_panels() for t in p.get("targets", []) if "camera" in t["expr"]
    ]
    assert all('camera=~"$camera"' in e for e in camera_filtered if "inspector_" in e and "by (camera" in e)

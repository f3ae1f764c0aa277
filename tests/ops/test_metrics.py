"""Tests for inspector.ops.metrics: a real HTTP /metrics endpoint on an injected registry, scraped and parsed."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from inspector.capture import shared as capture_shared
from inspector.config.metrics import MetricsConfig
from inspector.core.names import DROP_REASONS, QUEUES, VERDICTS
from inspector.daemon import ledger as daemon_ledger
from inspector.daemon import pipeline as daemon_pipeline
from inspector.ops.connections import ConnectionMetrics
from inspector.ops.endpoint import NOT_STARTED, Health, MetricsError, MetricsServer
from inspector.ops.metrics import InspectorMetrics, start_http_server

SCRAPE_TIMEOUT_S = 5.0
T0 = 1_714_564_800.0


@pytest.fixture
def served() -> Iterator[tuple[InspectorMetrics, MetricsServer, int]]:
    """Metrics on a fresh registry served on a free port; the server is closed after the test."""
    registry = CollectorRegistry()
    metrics = InspectorMetrics(registry, clock=lambda: T0)
    server, port = start_http_server(MetricsConfig(port=0), registry)
    yield metrics, server, port
    server.close()


def scrape(port: int) -> dict[str, Metric]:
    """GET /metrics over HTTP and parse it into families by name."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=SCRAPE_TIMEOUT_S) as resp:
        text = resp.read().decode("utf-8")
    return {family.name: family for family in text_string_to_metric_families(text)}


def sample_value(families: dict[str, Metric], family: str, sample: str, **labels: str) -> float:
    """Value of the sample called ``sample`` in ``family`` whose labels include ``labels``."""
    for s in families[family].samples:
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
            return float(s.value)
    raise AssertionError(f"no sample {sample}{labels} in {family}")


LATENCY_MS = {"backbone": 12.0, "queue": 3.0, "not_a_stage": 1.0, "end_to_end": 80.0}


def test_scraped_counters_follow_increments(served: tuple[InspectorMetrics, MetricsServer, int]) -> None:
    metrics, _, port = served
    metrics.init_camera("cam1")
    for _ in range(3):
        metrics.frames_captured.labels(camera="cam1").inc()
    metrics.frames_dropped.labels(camera="cam1", reason="queue_full").inc(2)
    metrics.camera_up.labels(camera="cam1").set(1)
    metrics.camera_reconnects.labels(camera="cam1").inc()
    metrics.queue_depth.labels(queue="capture", camera="cam1").set(5)
    families = scrape(port)
    assert sample_value(families, "inspector_frames_captured", "inspector_frames_captured_total") == 3
    assert (
        sample_value(
            families,
            "inspector_frames_dropped",
            "inspector_frames_dropped_total",
            camera="cam1",
            reason="queue_full",
        )
        == 2
    )
    assert sample_value(families, "inspector_camera_up", "inspector_camera_up", camera="cam1") == 1
    depth = sample_value(
        families, "inspector_queue_depth", "inspector_queue_depth", queue="capture", camera="cam1"
    )
    assert depth == 5
    assert sample_value(families, "inspector_verdicts", "inspector_verdicts_total", verdict="TIMEOUT") == 0


def test_record_verdict_updates_counts_score_and_latencies(
    served: tuple[InspectorMetrics, MetricsServer, int],
) -> None:
    metrics, _, port = served
    metrics.record_verdict("cam1", "FAIL", 3.2, LATENCY_MS)
    metrics.record_verdict("cam1", "ERROR", None, {"end_to_end": 80.0})
    families = scrape(port)
    verdicts = "inspector_verdicts_total"
    assert sample_value(families, "inspector_verdicts", verdicts, camera="cam1", verdict="FAIL") == 1
    assert sample_value(families, "inspector_verdicts", verdicts, camera="cam1", verdict="ERROR") == 1
    assert sample_value(families, "inspector_frames_scored", "inspector_frames_scored_total") == 1
    assert sample_value(families, "inspector_anomaly_score", "inspector_anomaly_score_sum") == pytest.approx(
        3.2
    )
    assert sample_value(families, "inspector_anomaly_score", "inspector_anomaly_score_bucket", le="2.5") == 0
    assert sample_value(families, "inspector_anomaly_score", "inspector_anomaly_score_bucket", le="4.0") == 1
    stage = "inspector_stage_latency_seconds"
    assert sample_value(families, stage, stage + "_sum", camera="cam1", stage="backbone") == pytest.approx(
        0.012
    )
    assert sample_value(families, stage, stage + "_sum", camera="cam1", stage="queue") == pytest.approx(0.003)
    assert not any(s.labels.get("stage") == "not_a_stage" for s in families[stage].samples)
    e2e = "inspector_end_to_end_latency_seconds"
    assert sample_value(families, e2e, e2e + "_count", camera="cam1") == 2
    assert sample_value(families, e2e, e2e + "_sum", camera="cam1") == pytest.approx(0.16, abs=1e-5)


def test_state_info_and_batch_metrics_are_exported(
    served: tuple[InspectorMetrics, MetricsServer, int],
) -> None:
    metrics, _, port = served
    metrics.set_build_info("0.1.0")
    metrics.set_gallery("cam1", "flange_a", "old", "resnet18")
    metrics.set_gallery("cam1", "flange_b", "new", "efficientnet_lite0")
    metrics.set_ready(True)
    metrics.worker_last_progress.set(T0 + 5)
    metrics.record_batch(8)
    families = scrape(port)
    assert sample_value(families, "inspector_build_info", "inspector_build_info", version="0.1.0") == 1
    galleries = families["inspector_gallery_info"].samples
    assert [s.labels["gallery_hash"] for s in galleries] == ["new"]
    assert sample_value(families, "inspector_ready", "inspector_ready") == 1
    assert sample_value(families, "inspector_up", "inspector_up") == 1
    assert sample_value(families, "inspector_start_time_seconds", "inspector_start_time_seconds") == T0
    progress = "inspector_worker_last_progress_timestamp_seconds"
    assert sample_value(families, progress, progress) == T0 + 5
    assert sample_value(families, "inspector_batch_size", "inspector_batch_size_bucket", le="4.0") == 0
    assert sample_value(families, "inspector_batch_size", "inspector_batch_size_bucket", le="8.0") == 1
    assert "process_start_time_seconds" in families


def test_metric_names_follow_prometheus_conventions(
    served: tuple[InspectorMetrics, MetricsServer, int],
) -> None:
    metrics, _, port = served
    metrics.init_camera("cam1")
    metrics.record_verdict("cam1", "FAIL", 3.2, LATENCY_MS)
    families = scrape(port)
    # prometheus-client also exports <name>_created series; the text parser lists them as families.
    ours = {n: f for n, f in families.items() if n.startswith("inspector_") and not n.endswith("_created")}
    assert len(ours) >= 17
    for name, family in ours.items():
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples), name
        if "latency" in name or name.endswith("_timestamp_seconds"):
            assert name.endswith("_seconds"), name
        if name.endswith("_info"):
            assert all(s.value == 1 for s in family.samples), name
        for sample in family.samples:
            assert "seq" not in sample.labels and "frame_id" not in sample.labels, name


def test_two_registries_are_independent() -> None:
    first, second = CollectorRegistry(), CollectorRegistry()
    a = InspectorMetrics(first, include_process_collector=False)
    InspectorMetrics(second, include_process_collector=False)
    a.frames_captured.labels(camera="x").inc()
    assert first.get_sample_value("inspector_frames_captured_total", {"camera": "x"}) == 1
    assert second.get_sample_value("inspector_frames_captured_total", {"camera": "x"}) is None


def test_score_buckets_are_configurable() -> None:
    registry = CollectorRegistry()
    metrics = InspectorMetrics(registry, score_buckets=(10.0, 20.0), include_process_collector=False)
    metrics.anomaly_score.labels(camera="c").observe(15.0)
    assert registry.get_sample_value("inspector_anomaly_score_bucket", {"camera": "c", "le": "10.0"}) == 0
    assert registry.get_sample_value("inspector_anomaly_score_bucket", {"camera": "c", "le": "20.0"}) == 1


def test_metrics_config_validates_port_and_buckets() -> None:
    with pytest.raises(ValidationError, match="port"):
        MetricsConfig(port=70000)
    with pytest.raises(ValidationError, match="strictly increasing"):
        MetricsConfig(score_buckets=(1.0, 1.0))
    with pytest.raises(ValidationError, match="extra"):
        MetricsConfig.model_validate({"extra": True})


def test_port_in_use_raises_error_naming_address_and_port() -> None:
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    port = blocker.getsockname()[1]
    try:
        with pytest.raises(MetricsError, match=f"127.0.0.1:{port}"):
            start_http_server(MetricsConfig(port=port), CollectorRegistry())
    finally:
        blocker.close()


def test_close_frees_the_port() -> None:
    registry = CollectorRegistry()
    server, port = start_http_server(MetricsConfig(port=0), registry)
    server.close()
    assert not server.thread.is_alive()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))


def get(port: int, path: str) -> tuple[int, str]:
    """(status, body) of a GET on the metrics endpoint, error statuses included."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=SCRAPE_TIMEOUT_S) as resp:
            return resp.status, resp.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8")


def test_healthz_answers_200_only_when_ready_livez_while_alive_each_with_the_reason() -> None:
    registry = CollectorRegistry()
    now = {"health": NOT_STARTED}
    server, port = start_http_server(MetricsConfig(port=0), registry, lambda: now["health"])
    try:
        assert get(port, "/healthz") == (503, "starting\n")
        assert get(port, "/livez") == (200, "starting\n")
        now["health"] = Health(ready=True, alive=True, reason="ready")
        assert get(port, "/healthz") == (200, "ready\n")
        now["health"] = Health(ready=False, alive=True, reason="degraded: camera cam1 down: no signal")
        assert get(port, "/healthz") == (503, "degraded: camera cam1 down: no signal\n")
        assert get(port, "/livez")[0] == 200  # a camera that reconnects by itself needs no restart
        now["health"] = Health(ready=False, alive=False, reason="degraded: model worker stalled for 31.0 s")
        assert get(port, "/livez") == (503, "degraded: model worker stalled for 31.0 s\n")
        status, body = get(port, "/")
        assert status == 404 and "/metrics" in body and "/livez" in body
        assert get(port, "/metrics")[0] == 200
    finally:
        server.close()


def test_every_series_of_a_camera_exists_at_zero_before_its_first_event(
    served: tuple[InspectorMetrics, MetricsServer, int],
) -> None:
    metrics, _, port = served
    metrics.init_camera("cam1")
    families = scrape(port)

    def value(family: str, sample: str, **labels: str) -> float:
        return sample_value(families, family, sample, camera="cam1", **labels)

    assert {
        value("inspector_frames_dropped", "inspector_frames_dropped_total", reason=r) for r in DROP_REASONS
    } == {0}
    assert {value("inspector_verdicts", "inspector_verdicts_total", verdict=v) for v in VERDICTS} == {0}
    assert {value("inspector_queue_depth", "inspector_queue_depth", queue=q) for q in QUEUES} == {0}
    stage = "inspector_stage_latency_seconds"
    assert {value(stage, stage + "_count", stage=s) for s in ("queue", "backbone", "encode")} == {0}
    archive = "inspector_archive_skipped_writes"
    assert value(archive, archive + "_total", reason="read_only") == 0


def test_the_endpoint_serves_no_created_series(served: tuple[InspectorMetrics, MetricsServer, int]) -> None:
    metrics, _, port = served
    metrics.init_camera("cam1")
    metrics.record_verdict("cam1", "PASS", 0.5, LATENCY_MS)
    text = get(port, "/metrics")[1]
    assert "inspector_verdicts_total{" in text
    assert "_created" not in text


def test_every_drop_reason_of_capture_and_daemon_has_its_series() -> None:
    # The metrics create DROP_REASONS at 0; a reason counted elsewhere but missing there would appear late.
    reasons = {
        value
        for module in (capture_shared, daemon_ledger, daemon_pipeline)
        for name, value in vars(module).items()
        if name.startswith("DROP_") and isinstance(value, str)
    }
    assert reasons == set(DROP_REASONS)


def test_promtool_check_metrics_finds_no_problem_in_what_the_daemon_exports(
    served: tuple[InspectorMetrics, MetricsServer, int],
) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not found: install Debian package 'prometheus' (apt-get install -y prometheus)")
    metrics, _, port = served
    metrics.set_build_info("0.1.0")
    metrics.set_gallery("cam1", "flange", "abc", "efficientnet_lite0")
    metrics.init_camera("cam1")
    metrics.outputs.init_sink("archive")
    metrics.record_verdict("cam1", "FAIL", 3.2, LATENCY_MS)
    metrics.record_batch(4)
    metrics.children.watch(lambda: {("camera", "cam1"): os.getpid()})
    text = get(port, "/metrics")[1]
    assert "inspector_child_cpu_seconds_total{" in text
    done = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0 and not done.stdout.strip() and not done.stderr.strip(), (
        done.stdout + done.stderr
    )


def _request(port: int, path: str, method: str) -> tuple[int, bytes, str | None]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=SCRAPE_TIMEOUT_S) as resp:
            return resp.status, resp.read(), resp.headers.get("Content-Length")
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read(), exc.headers.get("Allow")


def test_only_get_and_head_are_answered_and_head_metrics_has_the_length_without_the_body(
    served: tuple[InspectorMetrics, MetricsServer, int],
) -> None:
    _, _, port = served
    for method in ("POST", "PUT", "DELETE", "FOO"):
        status, _, allow = _request(port, "/healthz", method)
        assert (status, allow) == (405, "GET, HEAD"), method
    status, body, length = _request(port, "/metrics", "HEAD")
    assert status == 200 and body == b"" and length is not None and int(length) > 100


def test_connections_over_the_caps_get_503_and_every_connection_ends_at_its_deadline() -> None:
    registry = CollectorRegistry()
    limits = MetricsConfig(port=0, max_connections_per_client=2, header_timeout_s=0.5)
    server, port = start_http_server(
        limits, registry, lambda: Health(ready=True, alive=True, reason="ready"), ConnectionMetrics(registry)
    )
    try:
        held = [socket.create_connection(("127.0.0.1", port), timeout=SCRAPE_TIMEOUT_S) for _ in range(2)]
        held[1].sendall(b"\x00\x01 junk without an end")
        with socket.create_connection(("127.0.0.1", port), timeout=SCRAPE_TIMEOUT_S) as extra:
            assert extra.recv(64).startswith(b"HTTP/1.1 503")
        for sock in held:
            with sock:
                while sock.recv(4096):
                    pass  # the server closes both: one silent, one sending junk slowly
        assert get(port, "/healthz")[0] == 200
        refused = registry.get_sample_value(
            "inspector_http_connections_refused_total",
            {"listener": "metrics", "reason": "max_connections_per_client"},
        )
        assert refused == 1
    finally:
        server.close()

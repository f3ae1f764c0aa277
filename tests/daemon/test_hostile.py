"""Hostile and buggy inputs on every socket of the real daemon (``pytest -m hostile``): no message, connection or
subscription silences the line. One test per finding of issue 32, each with bounded floods; after each, the
daemon is still ``ready`` and the free-running camera still publishes."""

from __future__ import annotations

import json
import random
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import zmq

from inspector.bus.wire import VerdictHeader
from inspector.daemon.linecontrol import FIRST_RESTART_DELAY_S
from tests.hostile import (
    FREE,
    HEADER_TIMEOUT_S,
    LINE,
    HostileLine,
    closed_by_server,
    open_idle,
    raise_own_file_limit,
    start_line,
)
from tests.support import HTTP_TIMEOUT_S, SyntheticGallery, http_get, wait_until
from tests.toml_config import tcp

pytestmark = pytest.mark.hostile

IDLE_CONNECTIONS = 1000
SUBSCRIPTIONS = 10_000
SUBSCRIPTION_BYTES = 1000
SUBSCRIPTION_BATCH = 200  # a SUB socket drops subscriptions beyond its queue: send them in paced batches
RSS_GROWTH_MAX_MIB = 100.0  # 10k subscriptions of 1 KB took 486 MB before the fix
LONG_NAME_CHARS = 65_000
LONG_NAME_TRIGGERS = 200
FLOOD_TRIGGERS = 10_000
LOG_GROWTH_MAX_BYTES = 256 * 1024  # 200 triggers of a 65 KB name wrote 13 MB before the fix
HEADER_MAX_BYTES = 4096


@pytest.fixture(scope="module")
def line(
    tmp_path_factory: pytest.TempPathFactory, synthetic_gallery: SyntheticGallery
) -> Iterator[HostileLine]:
    from inspector.demo.data import write_demo_video

    folder = tmp_path_factory.mktemp("hostile")
    video = folder / "line.avi"
    write_demo_video(video, 16, 4.0, 4, 160, seed=5)
    running = start_line(folder, synthetic_gallery.path, video)
    try:
        running.daemon.wait_event("daemon_ready")
        assert running.ctl(cmd="status")["ok"]  # the control thread's one request before its injected death
        running.daemon.wait_event("socket_server_restarted")
        yield running
        assert running.daemon.terminate() == 0
    finally:
        running.bus.close()
        running.context.term()
        running.daemon.close()


@pytest.fixture(autouse=True)
def still_ready_and_publishing(line: HostileLine) -> Iterator[None]:
    """Around every test: afterwards the daemon runs, reads ready and keeps publishing the free camera."""
    yield
    before = len(line.verdicts(FREE))
    wait_until(lambda: len(line.verdicts(FREE)) >= before + 2, "the free-running camera to keep publishing")
    wait_until(lambda: line.state() == "ready", "the daemon to read ready")
    assert line.daemon.proc.poll() is None


# ---------------------------------------------------------------------------------------------- 1: sockets


def test_1_a_multipart_request_gets_an_error_answer_and_a_dead_handler_thread_degrades_and_is_restarted(
    line: HostileLine,
) -> None:
    answer = line.raw_ctl(b'{"cmd": "status"}', b'{"cmd": "reload"}')
    assert answer["ok"] is False and "one frame" in answer["error"] and "had 2" in answer["error"]
    assert line.ctl(cmd="status")["ok"]  # the socket answers the next request
    rejected = line.metric("inspector_triggers_rejected_total", reason="multipart")
    line.push([b'{"camera": "line", "part_id": "M-1"}', b"x", b"y"])
    wait_until(
        lambda: line.metric("inspector_triggers_rejected_total", reason="multipart") == rejected + 1,
        "one refusal for a message of three frames",
    )
    died = line.daemon.wait_event("socket_server_died")  # the injected death, during the fixture
    assert died["socket"] == "control" and "InjectedDeath" in died["error"]
    assert "degraded" in line.bus.got.states, "no heartbeat said degraded while the thread was dead"
    restarted = line.daemon.wait_event("socket_server_restarted")
    assert restarted["socket"] == "control"
    assert line.metric("inspector_restarts_total", kind="socket", name="control") == 1
    assert FIRST_RESTART_DELAY_S > 0 and line.ctl(cmd="status")["faults"] == {}


# ---------------------------------------------------------------------------------------------- 2: at


def test_2_a_trigger_at_far_from_now_is_an_error_verdict_at_once_and_blocks_no_later_trigger(
    line: HostileLine,
) -> None:
    line.push(
        [json.dumps({"camera": LINE, "part_id": "AT-2999", "at": "2999-01-01T00:00:00Z"}).encode()],
        [json.dumps({"camera": LINE, "part_id": "AT-1970", "at": "1970-01-01T00:00:00Z"}).encode()],
        [json.dumps({"camera": LINE, "part_id": "AT-now"}).encode()],
    )
    future, past, now = (line.verdict_for(p) for p in ("AT-2999", "AT-1970", "AT-now"))
    assert future.verdict == "ERROR" and future.error is not None and "max_at_future_ms" in future.error
    assert past.verdict == "ERROR" and past.error is not None and "max_at_past_ms" in past.error
    assert now.verdict in ("PASS", "FAIL") and now.seq == past.seq + 1 == future.seq + 2


# ---------------------------------------------------------------------------------------------- 3: HTTP


def test_3_idle_connections_are_capped_and_closed_and_every_other_socket_keeps_working(
    line: HostileLine,
) -> None:
    count = raise_own_file_limit(IDLE_CONNECTIONS + 512)
    assert count >= IDLE_CONNECTIONS // 2, "this test process may not open enough sockets"
    archived = line.metric("inspector_archive_records_total", camera=FREE, verdict="FAIL")
    idle = open_idle(line.ports["results"], min(count, IDLE_CONNECTIONS))
    try:
        assert line.ctl(cmd="status")["ok"]
        assert http_get(line.url("metrics", "/healthz"))[0] == 200
        assert http_get(line.url("metrics", "/metrics"))[0] == 200
        assert http_get(line.url("liveview", "/state"))[0] == 200
        wait_until(
            lambda: line.metric("inspector_archive_records_total", camera=FREE, verdict="FAIL") > archived,
            "a FAIL archived while the results port is flooded",
        )
        still_open = [s for s in idle if not closed_by_server(s, HEADER_TIMEOUT_S * 10)]
        assert still_open == [], f"{len(still_open)} of {len(idle)} idle connections were never closed"
    finally:
        for sock in idle:
            sock.close()
    assert http_get(line.url("results", f"/results/{FREE}/latest"))[0] == 200
    assert line.metric("inspector_archive_skipped_writes_total", camera=FREE, reason="io_error") == 0
    assert (
        line.metric("inspector_http_connections_refused_total", listener="results", reason="header_timeout")
        > 0
    )
    refused = line.metric(
        "inspector_http_connections_refused_total", listener="results", reason="max_connections"
    )
    assert (
        refused
        + line.metric(
            "inspector_http_connections_refused_total",
            listener="results",
            reason="max_connections_per_client",
        )
        >= len(idle) - 128
    )
    assert len(line.daemon.events("http_accept_failed")) <= 5


# ---------------------------------------------------------------------------------------------- 4: bus


def test_4_a_subscription_flood_is_refused_and_dropped_and_costs_no_memory(line: HostileLine) -> None:
    rss_before = line.rss_mib()
    rng = random.Random(4)
    flood = line.context.socket(zmq.SUB)
    flood.setsockopt(zmq.LINGER, 0)
    flood.connect(tcp(line.ports["bus"]))
    try:
        for start in range(0, SUBSCRIPTIONS, SUBSCRIPTION_BATCH):
            for _ in range(SUBSCRIPTION_BATCH):
                flood.setsockopt(zmq.SUBSCRIBE, rng.randbytes(SUBSCRIPTION_BYTES))
            time.sleep(0.02 if start else 0.2)
        wait_until(
            lambda: line.metric("inspector_bus_subscribers_dropped_total") >= 1,
            "the flooding subscriber dropped",
        )
        assert line.metric("inspector_bus_subscriptions_refused_total") > 0
        growth = line.rss_mib() - rss_before
        assert growth < RSS_GROWTH_MAX_MIB, f"the daemon grew {growth:.0f} MiB"
    finally:
        flood.close(linger=0)
    received = len(line.verdicts(FREE))
    wait_until(lambda: len(line.verdicts(FREE)) > received + 2, "verdicts to the well-behaved subscriber")


# ---------------------------------------------------------------------------------------------- 5: part ids


@pytest.mark.parametrize("part_id", ["P-\\ud800", "P-\\u0000", "P-\\n1", "A\\u001dGS1"])
def test_5_a_part_id_with_a_lone_surrogate_or_control_character_is_refused_and_leaves_no_gap(
    line: HostileLine, part_id: str
) -> None:
    raw = ('{"cmd": "trigger", "camera": "line", "part_id": "' + part_id + '"}').encode()
    answer = line.raw_ctl(raw)
    assert answer["ok"] is False and answer["reason"] == "malformed" and "printable" in answer["error"]
    tag = time.monotonic_ns()
    first = line.ctl(cmd="trigger", camera=LINE, part_id=f"OK-{tag}-1")
    second = line.ctl(cmd="trigger", camera=LINE, part_id=f"OK-{tag}-2")
    assert second["seq"] == first["seq"] + 1
    assert line.verdict_for(second["part_id"]).seq == line.verdict_for(first["part_id"]).seq + 1
    assert (
        line.daemon.event("verdict_encoding_failed") is None and line.daemon.event("publish_failed") is None
    )


# ---------------------------------------------------------------------------------------------- 6: evidence


def test_6_error_verdicts_of_triggers_are_archived_and_served_without_an_image(line: HostileLine) -> None:
    line.push([json.dumps({"camera": LINE, "part_id": "E-product", "product": "no-such"}).encode()])
    line.push([json.dumps({"camera": LINE, "part_id": "E-field", "colour": "red"}).encode()])
    for part in ("E-product", "E-field"):
        header = line.verdict_for(part)
        assert header.verdict == "ERROR"
        wait_until(_recorded(line.archive, header), f"the archive record of {part}")
        record = _record(line.archive, header)
        assert record is not None and {p.name for p in record.iterdir()} == {"header.json", "evidence.json"}
        status, body, _ = http_get(line.url("results", f"/results/{LINE}/{header.seq}"))
        assert status == 200 and json.loads(body)["images"] == {}, body[:300]
        for image in ("overlay.jpg", "frame.png", "mask.png"):
            assert http_get(line.url("results", f"/results/{LINE}/{header.seq}/{image}"))[0] == 404
        assert http_get(line.url("liveview", f"/cameras/{LINE}/image.jpg?seq={header.seq}"))[0] == 404
    assert http_get(line.url("results", f"/results/{LINE}/latest"))[0] == 200
    assert http_get(line.url("liveview", "/state"))[0] == 200


def _recorded(archive: Path, header: VerdictHeader) -> Callable[[], bool]:
    return lambda: _record(archive, header) is not None


def _record(archive: Path, header: VerdictHeader) -> Path | None:
    pattern = f"{header.camera}/*/*_{header.seq:08d}_ERROR_{header.boot_id}"
    found = [p for p in archive.glob(pattern) if p.is_dir() and not p.name.startswith(".tmp-")]
    return found[0] if found else None


# ---------------------------------------------------------------------------------------------- 7: logs


def test_7_long_names_and_floods_cost_bounded_log_lines_and_headers(line: HostileLine) -> None:
    logged, lines = line.log_bytes(), len(line.daemon.raw)
    long_camera = json.dumps({"camera": "c" * LONG_NAME_CHARS, "part_id": "L-1"}).encode()
    line.push(*([long_camera] for _ in range(LONG_NAME_TRIGGERS)))
    line.push(*([b"{not json"] for _ in range(FLOOD_TRIGGERS)))
    line.push(
        [json.dumps({"camera": LINE, "part_id": "L-product", "product": "p" * LONG_NAME_CHARS}).encode()]
    )
    header = line.verdict_for("L-product")  # after both floods: they have been read
    assert header.verdict == "ERROR" and len(header.model_dump_json()) < HEADER_MAX_BYTES
    assert line.log_bytes() - logged < LOG_GROWTH_MAX_BYTES
    assert max(len(raw) for raw in list(line.daemon.raw)[lines:]) < 4096
    time.sleep(1.1)  # a new rate-limit window: the next line says how many were held back
    line.push([b"{not json"])
    wait_until(
        lambda: any(e.get("suppressed", 0) > 0 for e in line.daemon.events("trigger_rejected")),
        "a trigger_rejected line carrying the suppressed count",
    )


# ---------------------------------------------------------------------------------------------- 8: smaller


def test_8_duplicates_are_counted_and_health_metrics_results_and_live_view_refuse_what_they_cannot_serve(
    line: HostileLine,
) -> None:
    assert line.ctl(cmd="pause", camera=LINE)["ok"]
    try:
        first = line.ctl(cmd="trigger", camera=LINE, part_id="DUP-1")
        second = line.ctl(cmd="trigger", camera=LINE, part_id="DUP-1")
        assert (first["duplicate"], second["duplicate"]) == (False, True)
        assert line.metric("inspector_triggers_duplicate_total", camera=LINE) >= 1
    finally:
        assert line.ctl(cmd="resume", camera=LINE)["ok"]
    for method in ("POST", "PUT", "DELETE", "FOO"):
        assert _status(line.url("metrics", "/healthz"), method) == 405, method
    assert _status(line.url("results", f"/results/{FREE}/latest"), "POST") == 405
    head = urllib.request.Request(line.url("metrics", "/metrics"), method="HEAD")
    with urllib.request.urlopen(head, timeout=HTTP_TIMEOUT_S) as response:
        assert response.status == 200 and response.read() == b""
    junk = socket.create_connection(("127.0.0.1", line.ports["metrics"]), timeout=HTTP_TIMEOUT_S)
    junk.sendall(b"\x00\x01\x02 not http")
    assert closed_by_server(junk, HEADER_TIMEOUT_S * 10)
    junk.close()
    other_boot = "0" * 32
    assert http_get(line.url("results", f"/results/{FREE}/latest?boot_id={other_boot}"))[0] == 404
    assert http_get(line.url("liveview", f"/cameras/{FREE}/image.jpg?seq=abc"))[0] == 400
    assert http_get(line.url("liveview", f"/cameras/{FREE}/image.jpg?seq=-1"))[0] == 400


def _status(url: str, method: str) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=HTTP_TIMEOUT_S) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        with exc:
            return int(exc.code)


def test_8_rejections_name_the_rule_and_the_at_window_uses_the_documented_default(line: HostileLine) -> None:
    soon = (datetime.now(UTC) + timedelta(milliseconds=500)).isoformat()
    answer = line.ctl(cmd="trigger", camera=LINE, part_id="SOON-1", at=soon)
    assert answer["ok"] and answer["fault"] is None  # within max_at_future_ms: it waits for its frame
    assert line.verdict_for("SOON-1").verdict in ("PASS", "FAIL")
    refused = line.ctl(cmd="trigger", camera="x" * 70_000, part_id="X-1")
    assert refused["ok"] is False and len(refused["error"]) < 400

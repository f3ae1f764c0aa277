"""Tests for inspector.bus.tail: SequenceTracker, and tail() in a thread against a real ZeroMQ PUB socket."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import zmq

from inspector.bus.tail import Gap, Regression, Restart, SequenceTracker, Stale, TailPrinter, tail
from inspector.bus.wire import (
    CameraStatus,
    Heartbeat,
    VerdictHeader,
    encode_heartbeat,
    encode_verdict,
    new_boot_id,
    rfc3339,
)
from inspector.cli.main import main
from inspector.core.names import LATENCY_STAGES

WAIT_S = 5.0
CLI_WAIT_S = 120.0  # a fresh interpreter importing the command line on a busy 2-core machine
STEP_S = 0.01
T0 = 1_714_564_800.0

Context = zmq.Context[zmq.Socket[bytes]]


class SharedOutput(io.StringIO):
    """A StringIO safe to write from the tail thread while the test thread reads it."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def write(self, s: str) -> int:
        """Append under the lock."""
        with self._lock:
            return super().write(s)

    def text(self) -> str:
        """Everything written so far."""
        with self._lock:
            return self.getvalue()


def verdict(boot_id: str, camera: str, seq: int, **overrides: Any) -> VerdictHeader:
    """A fresh PASS verdict header: published now, 12.3 ms after its capture."""
    now = time.time()
    fields: dict[str, Any] = {
        "boot_id": boot_id,
        "camera": camera,
        "seq": seq,
        "captured_at": rfc3339(now - 0.0123),
        "published_at": rfc3339(now),
        "age_ms": 12.3,
        "latency_ms": dict.fromkeys(LATENCY_STAGES, 0.0) | {"end_to_end": 12.3},
        "verdict": "PASS",
        "score": 1.25,
        "threshold": 2.5,
        "pixel_threshold": 1.0,
        "defect_area_px": 0,
        "defect_count": 0,
    }
    fields.update(overrides)
    return VerdictHeader.model_validate(fields)


def heartbeat(boot_id: str, state: str, worker: str = "up", **cameras: CameraStatus) -> Heartbeat:
    """A heartbeat (no cameras unless given)."""
    return Heartbeat.model_validate(
        {
            "boot_id": boot_id,
            "published_at": rfc3339(T0),
            "state": state,
            "uptime_s": 3.0,
            "cameras": cameras,
            "frames_published": 0,
            "worker": worker,
            "worker_alive": worker in ("up", "stopping"),
        }
    )


def wait_for(
    predicate: Callable[[], bool], action: Callable[[], object] | None = None, timeout_s: float = WAIT_S
) -> None:
    """Run ``action`` until ``predicate`` holds, waiting on an Event between tries (bounded)."""
    pause = threading.Event()
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        if action is not None:
            action()
        pause.wait(STEP_S)


@pytest.fixture
def bus() -> Iterator[tuple[Context, zmq.Socket[bytes], str]]:
    """A context and a PUB socket bound on a free localhost port."""
    ctx: Context = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind("tcp://127.0.0.1:*")
    endpoint = pub.getsockopt_string(zmq.LAST_ENDPOINT)
    yield ctx, pub, endpoint
    pub.close()
    ctx.term()


def test_tracker_reports_gap_with_missing_count() -> None:
    tracker = SequenceTracker()
    boot = new_boot_id()
    assert tracker.observe(boot, "cam1", 5) == []
    events = tracker.observe(boot, "cam1", 9)
    assert events == [Gap("cam1", 5, 9)]
    assert events[0].message() == "gap: camera cam1 seq 5 -> 9, 3 missing"
    assert tracker.observe(boot, "cam1", 10) == []


def test_tracker_keeps_cameras_apart_and_flags_regressions() -> None:
    tracker = SequenceTracker()
    boot = new_boot_id()
    tracker.observe(boot, "a", 1)
    assert tracker.observe(boot, "b", 100) == []
    assert tracker.observe(boot, "a", 2) == []
    assert tracker.observe(boot, "a", 2) == [Regression("a", 2, 2)]
    assert tracker.last_seq("a") == 2
    assert tracker.last_seq("b") == 100


def test_tracker_restart_resets_sequences() -> None:
    tracker = SequenceTracker()
    old, new = new_boot_id(), new_boot_id()
    tracker.observe(old, "cam1", 500)
    assert tracker.observe(new, "cam1", 0) == [Restart(old, new)]
    assert tracker.last_seq("cam1") == 0
    assert tracker.observe_boot(new, ["cam1"]) is None


def test_printer_warns_on_a_verdict_older_than_the_budget_on_arrival_counting_its_time_in_transit() -> None:
    boot = new_boot_id()
    header = verdict(boot, "cam1", 0, age_ms=300.0, published_at=rfc3339(T0), captured_at=rfc3339(T0 - 0.3))
    fresh = TailPrinter(max_age_ms=1000.0, clock=lambda: T0 + 0.5)  # 300 ms old + 500 ms in transit
    assert not any(line.startswith("WARNING") for line in fresh.on_verdict(header))
    late = TailPrinter(max_age_ms=1000.0, clock=lambda: T0 + 60.0)  # a subscriber that stalled a minute
    lines = late.on_verdict(header)
    assert lines[0] == "WARNING " + Stale("cam1", 0, 60_300.0, 1000.0).message()
    assert "treat it as a reject" in lines[0]
    as_json = TailPrinter(as_json=True, max_age_ms=1000.0, clock=lambda: T0 + 60.0)
    assert json.loads(as_json.on_verdict(header)[0])["warning"] == "stale"


def test_printer_shows_the_part_id_quoted_only_when_it_has_white_space() -> None:
    printer, boot = TailPrinter(), new_boot_id()
    lines = [printer.on_verdict(verdict(boot, "cam1", seq, part_id=part))[-1] for seq, part in enumerate(
        ["000123", "lot 7 / 12", None]
    )]  # fmt: skip
    assert " seq=0 part=000123 PASS " in lines[0]
    assert ' seq=1 part="lot 7 / 12" PASS ' in lines[1]
    assert " seq=2 part=- PASS " in lines[2]


def test_printer_names_the_worker_and_camera_states_of_a_normal_start_and_a_clean_stop() -> None:
    printer, boot = TailPrinter(), new_boot_id()
    cam = {"state": "starting", "up": False, "frames": 0, "last_seq": None}
    lines = printer.on_heartbeat(heartbeat(boot, "starting", "starting", cam1=CameraStatus(**cam)))
    assert lines[0].endswith("worker starting, cameras cam1=starting)") and "DEAD" not in lines[0]
    assert printer.on_heartbeat(heartbeat(boot, "starting", "starting", cam1=CameraStatus(**cam))) == []
    stopped = CameraStatus(**(cam | {"state": "stopped", "frames": 9, "last_seq": 8}))
    lines = printer.on_heartbeat(heartbeat(boot, "stopped", "stopped", cam1=stopped))
    assert "state starting -> stopped" in lines[0] and lines[0].endswith(
        "worker stopped, cameras cam1=stopped)"
    )


def test_printer_reports_malformed_and_unknown_messages() -> None:
    printer = TailPrinter()
    lines, is_verdict = printer.on_message([b"verdict.cam1", b"{", b""])
    assert not is_verdict
    assert lines[0].startswith("WARNING malformed message: verdict header")
    lines, _ = printer.on_message([b"other", b"x"])
    assert "unknown topic" in lines[0]


def test_tail_prints_verdicts_and_warns_on_gap_and_restart(
    bus: tuple[Context, zmq.Socket[bytes], str],
) -> None:
    ctx, pub, endpoint = bus
    out, stop = SharedOutput(), threading.Event()
    result: list[int] = []
    thread = threading.Thread(
        target=lambda: result.append(tail(endpoint, ctx, out, 5, ["verdict."], stop)), daemon=True
    )
    thread.start()
    first, second = new_boot_id(), new_boot_id()
    wait_for(
        lambda: "heartbeat: state" in out.text(),
        lambda: pub.send_multipart(encode_heartbeat(heartbeat(first, "ready"))),
    )
    for seq in (1, 2, 6):
        pub.send_multipart(encode_verdict(verdict(first, "cam1", seq), b""))
    pub.send_multipart(encode_verdict(verdict(second, "cam1", 0), b""))
    pub.send_multipart(encode_heartbeat(heartbeat(second, "ready")))
    pub.send_multipart(
        encode_verdict(
            verdict(second, "cam1", 1, verdict="FAIL", score=3.0, defect_area_px=7, part_id="A-7"), b""
        )
    )
    thread.join(WAIT_S)
    stop.set()
    assert not thread.is_alive()
    assert result == [0]
    text = out.text()
    assert "WARNING gap: camera cam1 seq 2 -> 6, 3 missing" in text
    assert f"WARNING restart: daemon boot_id {first} -> {second}" in text
    assert text.count("WARNING") == 2
    assert "cam1 seq=6 part=- PASS score=1.250 thr=2.500 area=0 e2e=12.3ms" in text
    assert "cam1 seq=1 part=A-7 FAIL score=3.000 thr=2.500 area=7" in text
    assert "heartbeat: state - -> ready" in text


def test_tail_json_mode_and_stop_event(bus: tuple[Context, zmq.Socket[bytes], str]) -> None:
    ctx, pub, endpoint = bus
    out, stop = SharedOutput(), threading.Event()
    thread = threading.Thread(
        target=tail, args=(endpoint, ctx, out, None, ["verdict.cam2"], stop), kwargs={"as_json": True}
    )
    thread.start()
    boot = new_boot_id()
    seq = iter(range(10_000))
    wait_for(
        lambda: "cam2" in out.text(),
        lambda: pub.send_multipart(encode_verdict(verdict(boot, "cam2", next(seq)), b"")),
    )
    pub.send_multipart(encode_verdict(verdict(boot, "cam9", 0), b""))  # not subscribed
    stop.set()
    thread.join(WAIT_S)
    assert not thread.is_alive()
    records = [json.loads(line) for line in out.text().splitlines()]
    assert records
    assert all(r["camera"] == "cam2" for r in records)
    assert [r["seq"] for r in records] == sorted(r["seq"] for r in records)


def test_tail_rejects_an_invalid_endpoint() -> None:
    ctx: Context = zmq.Context()
    out = io.StringIO()
    try:
        assert tail("bogus://nowhere", ctx, out, 1, ["verdict."], threading.Event()) == 2
    finally:
        ctx.term()
    assert "cannot connect to 'bogus://nowhere'" in out.getvalue()


def test_main_with_count_zero_exits_cleanly(bus: tuple[Context, zmq.Socket[bytes], str]) -> None:
    _, _, endpoint = bus
    assert main(["tail", "--connect", endpoint, "--count", "0"]) == 0


def test_tail_into_head_ends_quietly_with_status_0_when_head_closes_the_pipe(
    bus: tuple[Context, zmq.Socket[bytes], str],
) -> None:
    """``inspector tail | head -2``: head exits after two lines; tail must end with 0 and no traceback."""
    _, pub, endpoint = bus
    tail_cmd = [sys.executable, "-m", "inspector.cli", "tail", "--connect", endpoint]
    head = subprocess.Popen(["head", "-2"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    tailing = subprocess.Popen(tail_cmd, stdout=head.stdin, stderr=subprocess.PIPE)
    assert head.stdin is not None
    head.stdin.close()  # only tail writes into the pipe now
    boot, seq = new_boot_id(), iter(range(100_000))
    wait_for(
        lambda: tailing.poll() is not None,
        lambda: pub.send_multipart(encode_verdict(verdict(boot, "cam1", next(seq)), b"")),
        CLI_WAIT_S,
    )
    assert head.stdout is not None and tailing.stderr is not None
    out = head.stdout.read()  # head has exited: its output is complete
    head.stdout.close()
    head.wait(CLI_WAIT_S)
    errors = tailing.stderr.read().decode()
    tailing.stderr.close()
    assert tailing.wait() == 0, errors
    assert errors == ""  # no BrokenPipeError traceback, no "Exception ignored" line
    assert len(out.decode().splitlines()) == 2


def test_two_daemons_behind_one_proxy_are_not_reported_as_restarts() -> None:
    tracker = SequenceTracker()
    boot_a, boot_b = new_boot_id(), new_boot_id()
    events = []
    for seq in range(3):
        events += tracker.observe(boot_a, "line1_cam", seq)
        events += tracker.observe(boot_b, "line2_cam", seq)
    assert events == []
    restarted = tracker.observe(new_boot_id(), "line1_cam", 0)
    assert [type(e) for e in restarted] == [Restart]
    assert tracker.observe(boot_b, "line2_cam", 3) == []

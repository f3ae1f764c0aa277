"""Fault injection against the real daemon process (``pytest -m faults``): bad files in a folder camera, a
normal start's heartbeats, a stuck model worker seen by the systemd watchdog, camera processes killed with
SIGKILL past their restart budget. Each test states its pass criterion in its name and asserts it."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from functools import partial
from pathlib import Path

import pytest

from inspector.bus.wire import parse_rfc3339
from inspector.daemon.supervision import REPLACE_GRACE_S
from tests.badframes import TOO_LARGE, UNDECODABLE, WRONG_SIZE, write_bad_frames
from tests.processes import DaemonProcess, Subscriber, check_clean_lifecycle, child_pids
from tests.support import LabelledVideo, SyntheticGallery, free_port, wait_until
from tests.toml_config import BATCHING, NO_METRICS, Table, video_camera, write_daemon_config

pytestmark = pytest.mark.faults

WAIT_S = 240.0  # generous: a daemon start and a gallery warm-up on 2 busy cores
STALL_TIMEOUT_S = 10.0  # far above a normal batch on 2 busy cores, far below the injected stall
INJECTED_STALL_S = 60.0
STALL_AFTER_BATCHES = 5
RESTART_BUDGET = 2
WATCHDOG_USEC = 1_000_000  # a ping every 0.5 s
NOTIFY_BUFFER = 4096


@pytest.fixture
def daemons() -> Iterator[list[DaemonProcess]]:
    """Daemon processes started by a test; killed at teardown if a failed test left them running."""
    started: list[DaemonProcess] = []
    yield started
    for daemon in started:
        daemon.close()


def fault_config(
    path: Path,
    gallery: Path,
    bus: str,
    cameras: list[Table],
    supervision: Table | None = None,
    stall_timeout_s: float = 30.0,
) -> Path:
    return write_daemon_config(
        path,
        cameras=cameras,
        worker={"gallery": gallery, "stall_timeout_s": stall_timeout_s},
        batching={**BATCHING, "max_wait_ms": 50},
        bus={"bind": bus, "heartbeat_interval_s": 0.25, "sndhwm": 10000},
        metrics=NO_METRICS,
        supervision=supervision or {},  # an empty table: the defaults
    )


def line_camera(video: Path) -> Table:
    return video_camera("line", video, 10.0, queue_size=64, retry_initial_s=0.2, retry_max_s=0.5)


def assert_no_duplicates(sub: Subscriber) -> None:
    with sub.got.lock:
        keys = Counter((v.boot_id, v.camera, v.seq) for v in sub.got.verdicts)
    assert [k for k, n in keys.items() if n > 1] == [], "a (boot_id, camera, seq) was published twice"


def test_every_bad_file_in_a_folder_camera_is_scored_or_an_error_verdict_start_never_reads_degraded_nor_publishes_before_ready(
    tmp_path: Path,
    synthetic_gallery: SyntheticGallery,
    labelled_video: LabelledVideo,
    daemons: list[DaemonProcess],
) -> None:
    kinds = write_bad_frames(tmp_path / "bad")
    video, _ = labelled_video("line", 20, seed=3)
    bus = f"tcp://127.0.0.1:{free_port()}"
    folder: Table = {"name": "bad", "source": tmp_path / "bad", "fps": 5, "queue_size": 64}
    config = fault_config(
        tmp_path / "inspector.toml", synthetic_gallery.path, bus, [line_camera(video), folder]
    )
    sub = Subscriber(bus)
    try:
        daemons.append(daemon := DaemonProcess(config))
        daemon.wait_event("daemon_ready", WAIT_S)
        wait_until(lambda: len(sub.got.of("bad")) >= len(kinds), "a verdict for every file", WAIT_S)
        wait_until(lambda: len(sub.got.of("line")) >= 20, "the line camera's verdicts", WAIT_S)
        assert daemon.proc.poll() is None, "".join(daemon.raw)[-3000:]
        assert daemon.terminate() == 0
        wait_until(lambda: sub.got.states[-1] == "stopped", "the last heartbeat of a clean stop", WAIT_S)
    finally:
        sub.close()
    verdicts = sorted(sub.got.of("bad"), key=lambda v: v.seq)
    assert [v.seq for v in verdicts] == list(range(len(kinds)))
    assert [v.part_id for v in verdicts] == list(kinds)
    for v in verdicts:
        if v.part_id in (*UNDECODABLE, TOO_LARGE):
            assert v.verdict == "ERROR" and v.error and v.part_id in v.error, v
        elif v.part_id == WRONG_SIZE:
            assert (
                v.verdict == "ERROR" and v.error and v.error.startswith("frame size 1x1 px does not match")
            ), v
        else:
            assert v.verdict in ("PASS", "FAIL") and v.score is not None, v
    # The heartbeat from the first second: 'starting' before the model was loaded, then ready, never degraded.
    model_ready = daemon.event("model_ready")
    assert model_ready is not None
    first = sub.got.heartbeats[0]
    assert first.state == "starting" and {c.state for c in first.cameras.values()} == {"starting"}
    ready_at = datetime.fromisoformat(model_ready["timestamp"]).timestamp()
    assert parse_rfc3339(first.published_at) < ready_at, "no heartbeat before the model was loaded"
    states = [s for i, s in enumerate(sub.got.states) if i == 0 or sub.got.states[i - 1] != s]
    assert states in (["starting", "ready", "stopping", "stopped"], ["starting", "ready", "stopped"]), states
    check_clean_lifecycle(sub.got, {"bad": "ended", "line": "stopped"})
    assert_no_duplicates(sub)
    summary = daemon.event("daemon_stopped")
    assert summary is not None
    for name in ("bad", "line"):
        cam = summary["cameras"][name]
        assert cam["unaccounted"] == 0 and cam["captured"] == cam["published"] + sum(cam["dropped"].values())
        assert len(sub.got.of(name)) == cam["published"], name


def restarted_or_exited(daemon: DaemonProcess, restarts_before: int) -> bool:
    """The daemon logged one more camera process restart, or exited."""
    return len(daemon.events("camera_process_restart")) > restarts_before or daemon.proc.poll() is not None


class NotifyListener:
    """A NOTIFY_SOCKET datagram socket recording when each message arrived (the daemon's systemd side)."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.got: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(NOTIFY_BUFFER)
            except TimeoutError:
                continue
            for line in data.decode().splitlines():
                self.got.append((time.monotonic(), line))

    def times(self, message: str) -> list[float]:
        return [t for t, line in list(self.got) if line == message]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def test_a_stuck_worker_stops_the_watchdog_gets_timeout_verdicts_and_is_replaced_then_camera_kills_past_the_budget_exit_1(
    tmp_path: Path,
    synthetic_gallery: SyntheticGallery,
    labelled_video: LabelledVideo,
    daemons: list[DaemonProcess],
) -> None:
    video, _ = labelled_video("line", 20, seed=4)
    bus = f"tcp://127.0.0.1:{free_port()}"
    supervision = {"restart_budget": RESTART_BUDGET, "restart_window_s": 600}
    config = fault_config(
        tmp_path / "inspector.toml",
        synthetic_gallery.path,
        bus,
        [line_camera(video)],
        supervision,
        STALL_TIMEOUT_S,
    )
    notify = NotifyListener(tmp_path / "notify.sock")
    env = {
        "NOTIFY_SOCKET": str(tmp_path / "notify.sock"),
        "WATCHDOG_USEC": str(WATCHDOG_USEC),
        "FAULT_INJECT_WORKER_STALL": f"{STALL_AFTER_BATCHES}:{INJECTED_STALL_S}:1",
    }
    sub = Subscriber(bus)
    try:
        daemons.append(daemon := DaemonProcess(config, env=env))
        daemon.wait_event("daemon_ready", WAIT_S)
        wait_until(
            lambda: any(v.verdict == "TIMEOUT" for v in sub.got.of("line")), "TIMEOUT verdicts", WAIT_S
        )
        daemon.wait_event("worker_replaced", WAIT_S)
        timed_out = max(v.seq for v in sub.got.of("line") if v.verdict == "TIMEOUT")
        wait_until(
            lambda: any(v.seq > timed_out and v.verdict in ("PASS", "FAIL") for v in sub.got.of("line")),
            "scored verdicts from the replacement worker",
            WAIT_S,
        )
        for kill in range(RESTART_BUDGET + 1):
            wait_until(
                lambda: child_pids(daemon.proc.pid) != [], f"camera process before kill {kill + 1}", WAIT_S
            )
            for pid in child_pids(daemon.proc.pid):
                os.kill(pid, signal.SIGKILL)
            if kill < RESTART_BUDGET:
                wait_until(partial(restarted_or_exited, daemon, kill), "the camera restart", WAIT_S)
                assert daemon.proc.poll() is None, "exited within the restart budget"
        code = daemon.proc.wait(WAIT_S)
    finally:
        sub.close()
        notify.close()
    assert code == 1, "".join(daemon.raw)[-3000:]
    exhausted = daemon.event("restart_budget_exhausted")
    assert exhausted is not None and "camera line" in exhausted["reason"]
    timeouts = [v for v in sub.got.of("line") if v.verdict == "TIMEOUT"]
    assert timeouts and all(v.error and "model worker stalled" in v.error for v in timeouts)
    assert_no_duplicates(sub)
    pings = notify.times("WATCHDOG=1")
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert gaps and max(gaps) >= REPLACE_GRACE_S, "the watchdog kept being pinged while the worker was stuck"


def test_a_worker_that_stays_stuck_after_its_replacements_exhausts_the_budget_and_the_daemon_exits_1(
    tmp_path: Path,
    synthetic_gallery: SyntheticGallery,
    labelled_video: LabelledVideo,
    daemons: list[DaemonProcess],
) -> None:
    video, _ = labelled_video("line", 20, seed=5)
    bus = f"tcp://127.0.0.1:{free_port()}"
    supervision = {"restart_budget": 1, "restart_window_s": 600}
    config = fault_config(
        tmp_path / "inspector.toml", synthetic_gallery.path, bus, [line_camera(video)], supervision, 5.0
    )
    env = {"FAULT_INJECT_WORKER_STALL": f"1:{INJECTED_STALL_S}:10"}  # every batch after the first sticks
    sub = Subscriber(bus)
    try:
        daemons.append(daemon := DaemonProcess(config, env=env))
        code = daemon.proc.wait(WAIT_S * 2)
    finally:
        sub.close()
    assert code == 1, "".join(daemon.raw)[-3000:]
    assert len(daemon.events("worker_replaced")) == 1
    exhausted = daemon.event("restart_budget_exhausted")
    assert exhausted is not None and "model worker" in exhausted["reason"]
    timeouts = [v for v in sub.got.of("line") if v.verdict == "TIMEOUT"]
    assert timeouts and all(v.error and "model worker stalled" in v.error for v in timeouts)
    assert_no_duplicates(sub)
    summary = daemon.event("daemon_stopped")
    assert summary is not None and summary["cameras"]["line"]["unaccounted"] == 0

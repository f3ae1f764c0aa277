"""Tests for inspector.capture.manager: real OpenCV sources, real spawned camera processes, an ffmpeg HTTP camera."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from inspector.capture.manager import CaptureManager, gstreamer_available
from inspector.capture.shared import (
    DROP_CHANNEL_BUSY,
    DROP_PROCESS_RESTART,
    DROP_QUEUE_FULL,
    EVENT_CAPTURED,
    EVENT_DOWN,
    EVENT_ENDED,
    EVENT_RESTART,
    EVENT_UP,
    CaptureError,
)
from inspector.config.camera import CameraConfig
from inspector.core.records import Frame
from tests.badframes import TOO_LARGE, UNDECODABLE, write_bad_frames
from tests.support import free_port, wait_until

CLIP_FPS = 30.0
SLOW_NOMINAL_FPS = 1.0
CLIP_SIDE_PX = 64
LEVEL_STEP = 8  # frame i is filled with grey level i * LEVEL_STEP (survives MJPG exactly after rounding)
SPAWN_WAIT_S = 30.0  # spawned children import cv2/numpy/pydantic: generous on a loaded 2-core box
FFMPEG = shutil.which("ffmpeg")

ManagerFactory = Callable[..., CaptureManager]


def write_clip(path: Path, n_frames: int) -> Path:
    """Write an MJPG .avi whose frame i is uniformly grey at level i * LEVEL_STEP."""
    writer = cv2.VideoWriter(
        str(path), cv2.VideoWriter.fourcc(*"MJPG"), CLIP_FPS, (CLIP_SIDE_PX, CLIP_SIDE_PX)
    )
    assert writer.isOpened(), f"cannot write {path}"
    for i in range(n_frames):
        writer.write(np.full((CLIP_SIDE_PX, CLIP_SIDE_PX, 3), i * LEVEL_STEP, np.uint8))
    writer.release()
    return path


def frame_index(frame: Frame) -> int:
    """Decode the index written by write_clip."""
    return round(float(frame.image.mean()) / LEVEL_STEP)


def camera(name: str, source: Path | str, **kw: object) -> CameraConfig:
    return CameraConfig.model_validate({"name": name, "source": str(source), **kw})


def collect(
    manager: CaptureManager, until: Callable[[list[Frame]], bool], timeout_s: float = SPAWN_WAIT_S
) -> list[Frame]:
    """Call get_frames until ``until(frames)`` holds; fail after timeout_s."""
    frames: list[Frame] = []
    deadline = time.monotonic() + timeout_s
    while not until(frames):
        assert time.monotonic() < deadline, f"timed out; got {len(frames)} frames, stats {manager.stats()}"
        frames.extend(manager.get_frames(64, 0.1))
    return frames


def drain_all(manager: CaptureManager) -> list[Frame]:
    frames: list[Frame] = []
    while batch := manager.get_frames(64, 0.0):
        frames.extend(batch)
    return frames


def assert_accounted(manager: CaptureManager) -> None:
    """After stop and a full drain, every captured frame was delivered or dropped with a reason."""
    for name, st in manager.stats().items():
        assert st.captured == st.delivered + sum(st.dropped_by_reason.values()), (name, st)


def by_camera(frames: list[Frame], name: str) -> list[Frame]:
    return [f for f in frames if f.camera == name]


def is_listening(port: int) -> bool:
    """True when a TCP socket listens on the port (from /proc: connecting would use ffmpeg's one client)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                return True
    return False


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    return write_clip(tmp_path / "clip.avi", 30)


@pytest.fixture
def make_manager() -> Iterator[ManagerFactory]:
    """Build CaptureManagers that are always stopped at teardown."""
    managers: list[CaptureManager] = []

    def factory(cameras: list[CameraConfig], **kw: object) -> CaptureManager:
        manager = CaptureManager(cameras, threading.Event(), **kw)  # type: ignore[arg-type]
        managers.append(manager)
        manager.start()
        return manager

    yield factory
    for manager in managers:
        manager.stop()


@pytest.fixture
def ffmpeg_server(tmp_path: Path) -> Iterator[Callable[[int], subprocess.Popen[bytes]]]:
    """Start ffmpeg serving the clip as an HTTP MJPEG camera (one client) on a port; killed at teardown."""
    if FFMPEG is None:
        pytest.skip("ffmpeg not installed (apt-get install -y ffmpeg): HTTP camera test skipped")
    source = write_clip(tmp_path / "server_clip.avi", 30)
    procs: list[subprocess.Popen[bytes]] = []

    def start(port: int) -> subprocess.Popen[bytes]:
        url = f"http://127.0.0.1:{port}/cam.mjpg"
        args = ["-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(source)]
        args += ["-c:v", "mjpeg", "-f", "mpjpeg", "-listen", "1", url]
        proc = subprocess.Popen([str(FFMPEG), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(proc)
        wait_until(lambda: is_listening(port), f"ffmpeg listening on {port}", SPAWN_WAIT_S * 4)
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_config_rejects_bad_name_unknown_field_and_inverted_backoff() -> None:
    with pytest.raises(ValidationError, match="name"):
        camera("bad name!", "0")
    with pytest.raises(ValidationError, match="extra"):
        camera("cam", "0", exposure=3)
    with pytest.raises(ValidationError, match="retry_max_s"):
        camera("cam", "0", retry_initial_s=10, retry_max_s=1)
    with pytest.raises(ValidationError, match="device index"):
        camera("cam", "video.avi", kind="device")
    with pytest.raises(ValidationError, match="queue_size"):
        camera("cam", "0", queue_size=0)


def test_auto_kind_is_guessed_from_source(tmp_path: Path) -> None:
    assert camera("c", "2").resolved_kind() == "device"
    assert camera("c", "rtsp://10.0.0.5/stream").resolved_kind() == "url"
    assert camera("c", "videotestsrc ! videoconvert ! appsink").resolved_kind() == "gstreamer"
    assert camera("c", tmp_path).resolved_kind() == "folder"
    assert camera("c", tmp_path / "x.avi").resolved_kind() == "file"
    assert camera("c", tmp_path, kind="file").resolved_kind() == "file"


def test_gstreamer_camera_without_opencv_support_fails_clearly() -> None:
    if gstreamer_available():
        pytest.skip("this OpenCV has GStreamer; the missing-support error cannot occur")
    manager = CaptureManager([camera("gst", "videotestsrc ! appsink")], threading.Event())
    with pytest.raises(CaptureError, match="camera gst: .*GStreamer support"):
        manager.start()


@pytest.mark.parametrize("fast", [False, True], ids=["paced_at_file_rate", "as_fast_as_possible"])
def test_video_file_frames_arrive_in_order_with_consecutive_seq(
    clip: Path, make_manager: ManagerFactory, fast: bool
) -> None:
    events: list[tuple[str, str, float]] = []
    # Fast mode is given a slow nominal rate that it must ignore (pacing_fps is tested in test_child.py).
    rate = {"fps": SLOW_NOMINAL_FPS} if fast else {}
    manager = make_manager(
        [camera("line1", clip, as_fast_as_possible=fast, queue_size=64, **rate)],
        on_event=lambda cam, name, value: events.append((cam, name, value)),
    )
    before = time.time()
    frames = collect(manager, lambda fs: len(fs) >= 30)
    wait_until(lambda: manager.stats()["line1"].ended, "file source to end")
    manager.stop()
    frames += drain_all(manager)
    assert [f.seq for f in frames] == list(range(30))
    assert [frame_index(f) for f in frames] == list(range(30))
    assert all(f.camera == "line1" and f.part_id is None for f in frames)
    assert all(f.image.shape == (CLIP_SIDE_PX, CLIP_SIDE_PX, 3) and f.image.dtype == np.uint8 for f in frames)
    assert before <= frames[0].captured_at <= frames[-1].captured_at <= time.time()
    span_s = frames[-1].monotonic_at - frames[0].monotonic_at
    if not fast:  # paced at the file's rate: never faster (a busy machine can only make it slower)
        assert span_s >= 0.8 * 29 / CLIP_FPS
    # Unpaced reads are shown by pacing_fps (tests/capture/test_child.py), not by a wall-time upper bound here.
    st = manager.stats()["line1"]
    assert (st.captured, st.delivered, sum(st.dropped_by_reason.values()), st.up) == (30, 30, 0, False)
    assert sum(v for c, n, v in events if n == EVENT_CAPTURED) == 30
    assert {EVENT_UP, EVENT_ENDED} <= {n for _, n, _ in events}


def test_looping_file_restarts_at_end_and_seq_keeps_counting(
    tmp_path: Path, make_manager: ManagerFactory
) -> None:
    short = write_clip(tmp_path / "short.avi", 10)
    manager = make_manager([camera("loop", short, loop=True, fps=200.0, queue_size=64)])
    frames = collect(manager, lambda fs: len(fs) >= 25)[:25]
    assert [f.seq for f in frames] == list(range(25))
    assert [frame_index(f) for f in frames] == [i % 10 for i in range(25)]
    assert manager.stats()["loop"].reconnects == 0
    manager.stop()
    drain_all(manager)
    assert_accounted(manager)


def test_folder_source_gives_part_id_from_file_names(tmp_path: Path, make_manager: ManagerFactory) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    levels = {"part-0007": 70, "part-0002": 20, "A_01": 100}
    for stem, level in levels.items():
        cv2.imwrite(str(folder / f"{stem}.png"), np.full((20, 30), level, np.uint8))  # grey -> BGR
    (folder / "notes.txt").write_text("not an image")
    manager = make_manager([camera("folder", folder, fps=50.0)])
    frames = collect(manager, lambda fs: len(fs) >= 3)
    wait_until(lambda: manager.stats()["folder"].ended, "folder source to end")
    assert [f.part_id for f in frames] == sorted(levels)
    assert [int(f.image[0, 0, 2]) for f in frames] == [levels[s] for s in sorted(levels)]
    assert all(f.image.shape == (20, 30, 3) for f in frames)
    assert [f.seq for f in frames] == [0, 1, 2]


def test_folder_camera_gives_every_file_a_seq_and_unreadable_ones_a_fault(
    tmp_path: Path, make_manager: ManagerFactory
) -> None:
    kinds = write_bad_frames(tmp_path / "bad")
    manager = make_manager([camera("bad", tmp_path / "bad", fps=50.0)])
    frames = collect(manager, lambda fs: len(fs) >= len(kinds), timeout_s=SPAWN_WAIT_S * 4)
    assert [f.seq for f in frames] == list(range(len(kinds)))
    assert [f.part_id for f in frames] == list(kinds)
    faulty = {f.part_id for f in frames if f.fault is not None}
    assert faulty == {*UNDECODABLE, TOO_LARGE}
    assert all(f.image.size == 0 for f in frames if f.fault is not None)


def test_full_queue_drops_oldest_and_counts_reason(clip: Path, make_manager: ManagerFactory) -> None:
    manager = make_manager([camera("busy", clip, as_fast_as_possible=True, queue_size=4)])
    wait_until(lambda: manager.stats()["busy"].ended, "file source to end")  # consumer not reading
    manager.stop()
    frames = drain_all(manager)
    assert [f.seq for f in frames] == [26, 27, 28, 29]  # the newest survive, the gap shows the drops
    assert [frame_index(f) for f in frames] == [26, 27, 28, 29]
    st = manager.stats()["busy"]
    assert st.captured == 30 and st.delivered == 4
    assert st.dropped_by_reason[DROP_QUEUE_FULL] == 26
    assert_accounted(manager)


def test_get_frames_takes_round_robin_across_cameras(clip: Path, make_manager: ManagerFactory) -> None:
    cams = [camera(name, clip, as_fast_as_possible=True, queue_size=8) for name in ("a", "b")]
    manager = make_manager(cams)
    wait_until(lambda: all(st.ended for st in manager.stats().values()), "both file sources to end")
    batch = manager.get_frames(6, 1.0)
    assert sorted(f.camera for f in batch) == ["a", "a", "a", "b", "b", "b"]
    assert all(batch[i].camera != batch[i + 1].camera for i in range(5))
    assert [f.seq for f in by_camera(batch, "a")] == [22, 23, 24]  # oldest surviving frames first
    manager.stop()
    assert len(drain_all(manager)) == 10
    assert_accounted(manager)


def test_missing_file_is_retried_with_doubling_capped_backoff_and_other_camera_unaffected(
    clip: Path, tmp_path: Path, make_manager: ManagerFactory
) -> None:
    bad = camera("bad", tmp_path / "missing.avi", retry_initial_s=0.1, retry_max_s=0.4)
    good = camera("good", clip, loop=True, fps=50.0)
    waits: list[float] = []  # each "down" event carries the wait before the next attempt

    def on_event(cam: str, name: str, value: float) -> None:
        if cam == "bad" and name == EVENT_DOWN:
            waits.append(value)

    manager = make_manager([bad, good], on_event=on_event)
    wait_until(lambda: len(waits) >= 5, "five failed attempts of the bad camera")
    frames = collect(manager, lambda fs: len(fs) >= 40)
    st = manager.stats()
    assert {f.camera for f in frames} == {"good"}
    assert st["good"].up and st["good"].reconnects == 0
    assert not st["bad"].up and st["bad"].captured == 0
    assert "missing.avi" in st["bad"].last_error
    # Doubling from retry_initial_s, capped at retry_max_s: a busy retry loop would wait 0.
    assert waits[:5] == [0.1, 0.2, 0.4, 0.4, 0.4]
    manager.stop()
    drain_all(manager)
    assert_accounted(manager)


def pid_changed(manager: CaptureManager, pid: int) -> bool:
    """The camera's process is no longer ``pid`` (killed and noticed, or respawned)."""
    return manager.pid("cam") != pid


def test_a_camera_killed_more_often_than_its_restart_budget_is_no_longer_restarted_and_says_why(
    clip: Path, make_manager: ManagerFactory
) -> None:
    cfg = camera("cam", clip, loop=True, fps=30.0, retry_initial_s=0.1, retry_max_s=0.2)
    manager = make_manager([cfg], restart_budget=(1, 600.0))
    for kill in range(2):
        wait_until(lambda: manager.pid("cam") is not None, f"a camera process before kill {kill + 1}")
        pid = manager.pid("cam")
        assert pid is not None and manager.exhausted is None
        os.kill(pid, signal.SIGKILL)
        wait_until(partial(pid_changed, manager, pid), "the killed process noticed")
    wait_until(lambda: manager.exhausted is not None, "the budget to run out")
    assert manager.exhausted_camera == "cam" and "more than 1 restarts within 600 s" in (
        manager.exhausted or ""
    )
    assert manager.stats()["cam"].restarts == 2


@pytest.mark.parametrize("sig", [signal.SIGSTOP, signal.SIGKILL], ids=["hung", "crashed"])
def test_hung_or_crashed_child_is_restarted_with_seq_continuing(
    clip: Path, make_manager: ManagerFactory, sig: signal.Signals
) -> None:
    events: list[tuple[str, str, float]] = []
    # open_timeout_s bounds the watchdog's wait when the stop lands while the looping clip reopens
    cfg = camera(
        "cam", clip, loop=True, fps=60.0, read_timeout_s=0.3, retry_initial_s=0.1, open_timeout_s=1.0
    )
    manager = make_manager([cfg], watchdog_margin_s=0.3, on_event=lambda c, n, v: events.append((c, n, v)))
    before = collect(manager, lambda fs: len(fs) >= 5)
    pid = manager.pid("cam")
    assert pid is not None
    os.kill(pid, sig)  # SIGSTOP: the child "hangs" like a stuck read(); SIGKILL: it dies
    wait_until(lambda: manager.stats()["cam"].restarts >= 1, "watchdog restart", SPAWN_WAIT_S)
    wait_until(lambda: manager.pid("cam") not in (None, pid), "a new camera process", SPAWN_WAIT_S)
    after = collect(manager, lambda fs: len(fs) >= 5)
    seqs = [f.seq for f in before + after]
    assert seqs == sorted(set(seqs)) and after[0].seq > before[-1].seq
    assert [frame_index(f) for f in after[:5]] == [0, 1, 2, 3, 4]  # the new process reopened the file
    assert any(n == EVENT_RESTART for _, n, _ in events)
    manager.stop()
    drain_all(manager)
    assert_accounted(manager)
    assert set(manager.stats()["cam"].dropped_by_reason) <= {
        DROP_QUEUE_FULL, DROP_CHANNEL_BUSY, DROP_PROCESS_RESTART,
    }  # fmt: skip


def test_stop_does_not_wait_for_a_hung_camera(clip: Path, make_manager: ManagerFactory) -> None:
    manager = make_manager(
        [camera("stuck", clip, loop=True, fps=60.0), camera("ok", clip, loop=True, fps=60.0)]
    )
    collect(manager, lambda fs: {f.camera for f in fs} == {"stuck", "ok"})
    pid = manager.pid("stuck")
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    stopper = threading.Thread(target=manager.stop, kwargs={"timeout_s": 0.5}, daemon=True)
    stopper.start()
    stopper.join(SPAWN_WAIT_S)  # a stop that waited for the stopped child would never return
    assert not stopper.is_alive(), "stop() waited for a hung camera"
    drain_all(manager)
    assert_accounted(manager)
    assert manager.pid("stuck") is None and manager.pid("ok") is None


def test_http_camera_reconnects_after_server_restart_while_file_camera_keeps_delivering(
    clip: Path, make_manager: ManagerFactory, ffmpeg_server: Callable[[int], subprocess.Popen[bytes]]
) -> None:
    port = free_port()
    server = ffmpeg_server(port)
    net = camera(
        "net", f"http://127.0.0.1:{port}/cam.mjpg", open_timeout_s=2.0, read_timeout_s=1.0,
        retry_initial_s=0.2, retry_max_s=0.8, queue_size=64,
    )  # fmt: skip
    manager = make_manager([net, camera("file", clip, loop=True, fps=30.0, queue_size=64)])
    first = collect(manager, lambda fs: len(by_camera(fs, "net")) >= 10)
    server.kill()
    server.wait()
    wait_until(lambda: not manager.stats()["net"].up, "net camera down", 10.0)
    reconnects_at_outage = manager.stats()["net"].reconnects
    outage = collect(manager, lambda fs: manager.stats()["net"].reconnects >= reconnects_at_outage + 3)
    assert len(by_camera(outage, "file")) >= 10, "the file camera stalled during the outage"
    ffmpeg_server(port)
    again = collect(manager, lambda fs: len(by_camera(fs, "net")) >= 10)
    assert manager.stats()["net"].up
    net_frames = by_camera(first + outage + again, "net")
    seqs = [f.seq for f in net_frames]
    assert seqs == list(range(len(seqs))), "seq must continue across reconnects (no drops with queue_size 64)"
    file_seqs = [f.seq for f in by_camera(first + outage + again, "file")]
    assert file_seqs == list(range(len(file_seqs)))
    manager.stop()
    drain_all(manager)
    assert_accounted(manager)


@pytest.mark.faults
def test_a_stream_that_stays_open_but_stops_sending_is_detected_within_read_timeout_and_reopened(
    make_manager: ManagerFactory, ffmpeg_server: Callable[[int], subprocess.Popen[bytes]]
) -> None:
    port = free_port()
    server = ffmpeg_server(port)
    net = camera(
        "net", f"http://127.0.0.1:{port}/cam.mjpg", open_timeout_s=2.0, read_timeout_s=1.0,
        retry_initial_s=0.2, retry_max_s=0.8, queue_size=64,
    )  # fmt: skip
    manager = make_manager([net])
    first = collect(manager, lambda fs: len(fs) >= 10)
    server.send_signal(signal.SIGSTOP)  # the TCP connection stays open; no more bytes arrive
    try:
        wait_until(
            lambda: manager.stats()["net"].last_error != "", "the stalled stream noticed", SPAWN_WAIT_S
        )
        stalled = manager.stats()["net"]
        assert not stalled.up and ("read" in stalled.last_error or "no frame" in stalled.last_error), stalled
    finally:
        server.send_signal(signal.SIGCONT)
    server.kill()  # ffmpeg -listen 1 serves one client: a new server takes the reconnect
    server.wait()
    ffmpeg_server(port)
    again = collect(manager, lambda fs: len(fs) >= 10, timeout_s=SPAWN_WAIT_S * 2)
    assert manager.stats()["net"].up and manager.stats()["net"].reconnects >= 1
    seqs = [f.seq for f in first + again]
    assert seqs == sorted(set(seqs)), "seq continues across the reopen, never repeats"
    manager.stop()
    drain_all(manager)
    assert_accounted(manager)

"""End-to-end tests of ``python -m inspector.cli run``: the real daemon process, a video-file camera, an HTTP
MJPEG camera served by ffmpeg, a real ZeroMQ subscriber and the metrics endpoint scraped over HTTP."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from inspector.config.runtime import RuntimeConfig
from inspector.core.names import VERDICTS
from tests.processes import DaemonProcess, Received, Subscriber, check_clean_lifecycle
from tests.support import LabelledVideo, Samples, SyntheticGallery, free_port, metric, scrape, wait_until
from tests.toml_config import BATCHING, NO_METRICS, Table, video_camera, write_daemon_config

FFMPEG = shutil.which("ffmpeg")
EXIT_CONFIG = 78
WAIT_S = 120.0  # generous bounds: a busy 2-core machine
FILE_FRAMES = 60
CAMERA_FPS = 5.0


def dropped(samples: Samples, camera: str) -> float:
    return sum(
        v
        for (n, lab), v in samples.items()
        if n == "inspector_frames_dropped_total" and ("camera", camera) in lab
    )


def write_config(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def mjpeg_server(labelled_video: LabelledVideo) -> Iterator[Callable[[int], subprocess.Popen[bytes]]]:
    """Start ffmpeg serving a demo video as an HTTP MJPEG camera (one client) on a port."""
    if FFMPEG is None:
        pytest.skip("ffmpeg is not installed (apt-get install -y ffmpeg): the MJPEG camera test needs it")
    video, _ = labelled_video("served", 24, seed=6, fps=CAMERA_FPS)
    procs: list[subprocess.Popen[bytes]] = []

    def start(port: int) -> subprocess.Popen[bytes]:
        args = ["-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(video)]
        args += ["-c:v", "copy", "-f", "mpjpeg", "-listen", "1", f"http://127.0.0.1:{port}/cam.mjpg"]
        proc = subprocess.Popen([str(FFMPEG), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


@pytest.fixture
def daemons() -> Iterator[list[DaemonProcess]]:
    """Daemon processes started by a test; killed at teardown if a failed test left them running."""
    started: list[DaemonProcess] = []
    yield started
    for daemon in started:
        daemon.close()


def main_config(
    tmp_path: Path, gallery: Path, video: Path, net_port: int, bus: str, metrics_port: int
) -> Path:
    net: Table = {
        "name": "net",
        "source": f"http://127.0.0.1:{net_port}/cam.mjpg",
        "open_timeout_s": 2.0,
        "read_timeout_s": 1.0,
        "retry_initial_s": 0.2,
        "retry_max_s": 1.0,
        "queue_size": 64,
    }
    return write_daemon_config(
        tmp_path / "inspector.toml",
        cameras=[{"name": "file", "source": video, "fps": CAMERA_FPS, "queue_size": 64}, net],
        worker={"gallery": gallery},
        batching={**BATCHING, "max_wait_ms": 50, "deadline_ms": 30000},
        bus={"bind": bus, "heartbeat_interval_s": 0.5},
        metrics={"port": metrics_port},
    )


@pytest.mark.faults
def test_two_cameras_deliver_verdicts_survive_a_camera_outage_and_metrics_agree(
    tmp_path: Path,
    synthetic_gallery: SyntheticGallery,
    labelled_video: LabelledVideo,
    mjpeg_server: Callable[[int], subprocess.Popen[bytes]],
    daemons: list[DaemonProcess],
) -> None:
    video, labels = labelled_video("line", FILE_FRAMES, seed=3)
    net_port, bus_port, metrics_port = free_port(), free_port(), free_port()
    bus = f"tcp://127.0.0.1:{bus_port}"
    server = mjpeg_server(net_port)
    sub = Subscriber(bus)
    try:
        config = main_config(tmp_path, synthetic_gallery.path, video, net_port, bus, metrics_port)
        daemons.append(daemon := DaemonProcess(config))
        ready = daemon.wait_event("daemon_ready")
        assert ready["bus"] == bus and ready["metrics_port"] == metrics_port
        runtime = daemon.event("model_runtime")  # the defaults take the fast CPU paths, float32 checked
        assert runtime is not None and runtime["level"] == "info" and runtime["fallback"] is False, runtime
        assert runtime["backbone_runtime"] == "openvino" and runtime["probe_rel_diff"] <= 1e-4
        assert runtime["pixel_kernel"].startswith("fused")
        got = sub.got
        wait_until(lambda: len(got.of("net")) >= 5 and len(got.of("file")) >= 3, "verdicts from both cameras")

        server = check_outage(server, mjpeg_server, net_port, got)
        assert daemon.proc.poll() is None, "the daemon died during the camera outage"
        # Heartbeats told subscribers about the outage: ready with both cameras, degraded without one.
        assert {"ready", "degraded"} <= set(got.states)

        wait_until(lambda: ended(daemon, "file"), "the file camera to reach the end of its video")
        server.kill()  # the network camera goes down for good, so the daemon goes quiet
        server.wait()
        wait_quiet(got, metrics_port)
        check_file_verdicts(got, labels)
        check_net_verdicts(got)
        check_metrics_agree(scrape(metrics_port), got)

        assert daemon.terminate() == 0
        check_final_summary(daemon, got)
    finally:
        sub.close()


def wait_quiet(got: Received, metrics_port: int) -> None:
    """Wait until the network camera is down and every captured frame is published (and received) or dropped."""

    def settled() -> bool:
        samples = scrape(metrics_port)
        if metric(samples, "inspector_camera_up", camera="net") != 0.0:
            return False  # the network camera has not noticed yet that its server is gone
        for camera in ("file", "net"):
            verdicts = sum(
                metric(samples, "inspector_verdicts_total", camera=camera, verdict=v) for v in VERDICTS
            )
            captured = metric(samples, "inspector_frames_captured_total", camera=camera)
            if captured != verdicts + dropped(samples, camera) or len(got.of(camera)) != verdicts:
                return False
        return True

    wait_until(settled, "every captured frame to end in a received verdict or a counted drop")


def check_metrics_agree(samples: Samples, got: Received) -> None:
    """Counters equal what the subscriber received; captured = verdicts + counted drops; seq gaps = drops."""
    for camera in ("file", "net"):
        verdicts = got.of(camera)
        for verdict in ("PASS", "FAIL", "TIMEOUT", "ERROR"):
            received = sum(1 for v in verdicts if v.verdict == verdict)
            assert metric(samples, "inspector_verdicts_total", camera=camera, verdict=verdict) == received
        captured = metric(samples, "inspector_frames_captured_total", camera=camera)
        lost = dropped(samples, camera)
        assert captured == len(verdicts) + lost, f"{camera}: captured {captured} != verdicts + drops {lost}"
        seqs = sorted(v.seq for v in verdicts)
        assert len(set(seqs)) == len(seqs), f"{camera}: a seq was published twice"
        missing = set(range(int(captured))) - set(seqs)
        assert len(missing) == lost, f"{camera}: seq gaps {sorted(missing)} but {lost} counted drops"
        e2e = metric(samples, "inspector_end_to_end_latency_seconds_count", camera=camera)
        assert e2e == len(verdicts)
    assert metric(samples, "inspector_frames_captured_total", camera="file") == FILE_FRAMES
    assert metric(samples, "inspector_camera_reconnects_total", camera="net") >= 1
    assert metric(samples, "inspector_camera_up", camera="net") == 0.0


def check_final_summary(daemon: DaemonProcess, got: Received) -> None:
    stopped = daemon.wait_event("daemon_stopped", WAIT_S)
    # Everything was flushed before the process exited; give the SUB thread a moment to read it.
    wait_until(lambda: got.states and got.states[-1] == "stopped", "the final 'stopped' heartbeat")
    for camera, counts in stopped["cameras"].items():
        assert counts["published"] == len(got.of(camera))
        assert counts["unaccounted"] == 0
    assert daemon.event("daemon_stopping") is not None


def ended(daemon: DaemonProcess, camera: str) -> bool:
    return any(
        e.get("event") == "camera_event" and e.get("camera") == camera and e.get("event_name") == "ended"
        for e in list(daemon.logs)
    )


def check_outage(
    server: subprocess.Popen[bytes],
    start_server: Callable[[int], subprocess.Popen[bytes]],
    net_port: int,
    got: Received,
) -> subprocess.Popen[bytes]:
    """Kill the MJPEG server: net goes down, file keeps delivering; restart it: net resumes. Returns the new server."""
    server.kill()
    server.wait()
    wait_until(lambda: got.cameras_up.get("net") is False, "a heartbeat saying the network camera is down")
    file_before = len(got.of("file"))
    wait_until(
        lambda: len(got.of("file")) >= file_before + 5, "file verdicts while the network camera is down"
    )
    assert got.cameras_up.get("net") is False, "the network camera came back with no server"
    net_before = len(got.of("net"))
    restarted = start_server(net_port)
    wait_until(lambda: len(got.of("net")) >= net_before + 5, "the network camera to resume after restart")
    return restarted


def check_file_verdicts(got: Received, labels: list[str | None]) -> None:
    for seq, verdict in ((v.seq, v.verdict) for v in got.of("file")):
        expected = "PASS" if labels[seq] is None else "FAIL"
        assert verdict == expected, f"file seq {seq} ({labels[seq] or 'good'}) got {verdict}"


def check_net_verdicts(got: Received) -> None:
    verdicts = {v.verdict for v in got.of("net")}
    assert verdicts == {"PASS", "FAIL"}, f"net verdicts {verdicts}"


@pytest.mark.faults
def test_sigterm_exits_0_after_publishing_every_accepted_frame_and_heartbeats_stopping_then_stopped(
    tmp_path: Path,
    synthetic_gallery: SyntheticGallery,
    labelled_video: LabelledVideo,
    daemons: list[DaemonProcess],
) -> None:
    video, _ = labelled_video("burst", 20, seed=3)
    bus = f"tcp://127.0.0.1:{free_port()}"
    config = write_daemon_config(
        tmp_path / "burst.toml",
        cameras=[video_camera("burst", video, 100, queue_size=8)],
        worker={"gallery": synthetic_gallery.path},
        batching={**BATCHING, "deadline_ms": 30000},
        bus={"bind": bus},
        metrics=NO_METRICS,
    )
    sub = Subscriber(bus)
    try:
        daemons.append(daemon := DaemonProcess(config))
        daemon.wait_event("daemon_ready")
        # The camera outruns the worker: frames are queued, batched and in flight when SIGTERM arrives.
        wait_until(lambda: sub.got.count() >= 8, "the first verdicts")
        assert daemon.terminate() == 0
        stopping = daemon.wait_event("daemon_stopping", WAIT_S)
        assert stopping["accepted_in_flight"] > 0, "nothing was in flight: the test proves nothing"
        stopped = daemon.wait_event("daemon_stopped", WAIT_S)
        counts = stopped["cameras"]["burst"]
        assert counts["unaccounted"] == 0
        assert set(counts["dropped"]) <= {"queue_full", "channel_busy"}, counts["dropped"]
        assert counts["captured"] == counts["published"] + sum(counts["dropped"].values())
        wait_until(lambda: len(sub.got.of("burst")) >= counts["published"], "the last verdicts")
        seqs = [v.seq for v in sub.got.of("burst")]
        assert len(seqs) == counts["published"] == len(set(seqs))
        assert daemon.event("shutdown_incomplete") is None
        wait_until(lambda: sub.got.states[-1] == "stopped", "the last heartbeat of a clean stop")
    finally:
        sub.close()
    # A clean stop is told from a failure: the looping camera and the worker end stopped, never down.
    check_clean_lifecycle(sub.got, {"burst": "stopped"})


@pytest.mark.faults
@pytest.mark.parametrize("command", ["run", "check-config"])
def test_bad_config_exits_78_naming_each_field_without_traceback(tmp_path: Path, command: str) -> None:
    config = write_config(
        tmp_path / "bad.toml",
        '[[cameras]]\nname = "cam1"\nsource = "0"\nfps = -1\n[batching]\nmax_wait_ms = 50\ndeadline_ms = 10\n',
    )
    args = ["--config", str(config)] if command == "run" else [str(config)]
    done = subprocess.run(
        [sys.executable, "-m", "inspector.cli", command, *args],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
    )
    assert done.returncode == EXIT_CONFIG
    lines = done.stderr.strip().splitlines()
    assert lines == [
        f"{config}: cameras.0.fps: Input should be greater than 0",
        f"{config}: batching: deadline_ms (10.0) must be greater than max_wait_ms (50.0)",
    ]
    assert "Traceback" not in done.stderr


def test_run_without_a_product_exits_78_naming_the_camera_field(tmp_path: Path) -> None:
    config = write_config(tmp_path / "nogallery.toml", '[[cameras]]\nname = "cam1"\nsource = "0"\n')
    done = subprocess.run(
        [sys.executable, "-m", "inspector.cli", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
    )
    assert done.returncode == EXIT_CONFIG
    assert done.stderr.strip() == (
        f"{config}: cameras.0.product: camera cam1 has no product (set product, gallery or worker.gallery)"
    )


def _run_exit(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inspector.cli", "run", "--config", str(config)],
        capture_output=True, text=True, timeout=WAIT_S, check=False,
    )  # fmt: skip


@pytest.mark.faults
def test_a_gallery_refused_for_any_reason_exits_78_not_1(
    tmp_path: Path, synthetic_gallery: SyntheticGallery
) -> None:
    from inspector.model.build import build_gallery
    from inspector.model.gallery import read_manifest

    flipped = tmp_path / "flipped.safetensors"
    raw = bytearray(synthetic_gallery.path.read_bytes())
    raw[-100] ^= 0xFF  # a tensor byte: the manifest still reads, the content hash does not match
    flipped.write_bytes(bytes(raw))
    assert read_manifest(flipped) == read_manifest(synthetic_gallery.path)
    images = sorted((synthetic_gallery.path.parent).glob("*.png"))[:3]
    uncalibrated = tmp_path / "raw.safetensors"
    build_gallery(images, uncalibrated, synthetic_gallery.model, RuntimeConfig())
    for gallery, reason in ((flipped, "content hash mismatch"), (uncalibrated, "is not calibrated")):
        text = f'[worker]\ngallery = "{gallery}"\n[[cameras]]\nname = "cam1"\nsource = "0"\n'
        config = write_config(tmp_path / f"{gallery.stem}.toml", text)
        done = _run_exit(config)
        assert done.returncode == EXIT_CONFIG, done.stderr
        assert reason in done.stderr and str(gallery) in done.stderr and "Traceback" not in done.stderr

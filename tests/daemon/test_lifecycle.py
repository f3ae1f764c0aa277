"""Tests for inspector.daemon.lifecycle: the in-process daemon lifecycle with real cameras, ZeroMQ, HTTP and sd_notify."""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import zmq
from prometheus_client import CollectorRegistry

from inspector.bus.wire import Heartbeat, decode_heartbeat, decode_verdict
from inspector.config.batching import BatchingConfig
from inspector.config.bus import BusConfig
from inspector.config.camera import CameraConfig
from inspector.config.load import ConfigError
from inspector.config.metrics import MetricsConfig
from inspector.config.model import ModelConfig
from inspector.config.root import InspectorConfig
from inspector.config.worker import WorkerConfig
from inspector.daemon.lifecycle import Daemon
from inspector.model.header import GalleryError
from inspector.ops.sdnotify import SdNotifier
from tests.support import LabelledVideo, SyntheticGallery, free_port, http_get, metric, scrape, wait_until

Context = zmq.Context[zmq.Socket[bytes]]
WAIT_S = 60.0
VIDEO_FRAMES = 12
WATCHDOG_USEC = "200000"


@dataclass
class Recorder:
    """Collects sd_notify datagrams and bus messages in background threads."""

    notify: list[tuple[float, str]] = field(default_factory=list)
    verdicts: list[tuple[str, int, str]] = field(default_factory=list)
    heartbeats: list[tuple[float, str, dict[str, bool]]] = field(default_factory=list)
    beats: list[Heartbeat] = field(default_factory=list)
    order: list[str] = field(default_factory=list)  # "heartbeat <state>" or "verdict", in arrival order
    stop: threading.Event = field(default_factory=threading.Event)

    def notified(self, text: str) -> list[float]:
        return [t for t, msg in self.notify if text in msg]


def listen_notify(sock: socket.socket, rec: Recorder) -> None:
    sock.settimeout(0.1)
    while not rec.stop.is_set():
        try:
            data = sock.recv(4096)
        except TimeoutError:
            continue
        rec.notify.append((time.monotonic(), data.decode()))


def listen_bus(sub: zmq.Socket[bytes], rec: Recorder) -> None:
    while not rec.stop.is_set():
        if not sub.poll(50):
            continue
        parts = sub.recv_multipart()
        if parts[0] == b"heartbeat":
            hb = decode_heartbeat(parts)
            rec.heartbeats.append((time.monotonic(), hb.state, {n: c.up for n, c in hb.cameras.items()}))
            rec.beats.append(hb)
            rec.order.append(f"heartbeat {hb.state}")
        else:
            _, header, _ = decode_verdict(parts)
            rec.verdicts.append((header.camera, header.seq, header.verdict))
            rec.order.append("verdict")


@pytest.fixture
def harness() -> Iterator[tuple[Context, Recorder, socket.socket, str]]:
    """A ZeroMQ context, a recorder, and a bound NOTIFY_SOCKET datagram socket (short path for AF_UNIX)."""
    ctx: Context = zmq.Context()
    rec = Recorder()
    folder = tempfile.mkdtemp(prefix="sdn", dir="/tmp")
    path = f"{folder}/notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    threads = [threading.Thread(target=listen_notify, args=(sock, rec), daemon=True)]
    threads[0].start()
    yield ctx, rec, sock, path
    rec.stop.set()
    threads[0].join()
    sock.close()
    Path(path).unlink(missing_ok=True)
    Path(folder).rmdir()
    ctx.destroy(linger=0)  # also closes sockets a failed test left open, so teardown cannot hang


def daemon_config(gallery: Path, cameras: list[CameraConfig], port: int) -> InspectorConfig:
    return InspectorConfig(
        cameras=cameras,
        worker=WorkerConfig(gallery=gallery),
        batching=BatchingConfig(max_batch=4, max_wait_ms=20.0, deadline_ms=30_000.0),
        bus=BusConfig(bind=f"tcp://127.0.0.1:{port}", heartbeat_interval_s=0.2, linger_ms=1000),
        metrics=MetricsConfig(port=0),
        shutdown_timeout_s=20.0,
    )


def test_daemon_is_ready_only_after_start_up_healthz_503_naming_the_down_camera_then_stops_cleanly(
    synthetic_gallery: SyntheticGallery,
    labelled_video: LabelledVideo,
    harness: tuple[Context, Recorder, socket.socket, str],
) -> None:
    ctx, rec, _, notify_path = harness
    video, labels = labelled_video("line", VIDEO_FRAMES, seed=3)
    port = free_port()
    cameras = [
        CameraConfig(name="line", source=str(video), fps=10.0, queue_size=64),
        CameraConfig(
            name="ghost", source="http://127.0.0.1:9/none.mjpg", open_timeout_s=0.5, retry_max_s=1.0
        ),
    ]
    config = daemon_config(synthetic_gallery.path, cameras, port)
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(f"tcp://127.0.0.1:{port}")
    bus_thread = threading.Thread(target=listen_bus, args=(sub, rec), daemon=True)
    bus_thread.start()
    env = {"NOTIFY_SOCKET": notify_path, "WATCHDOG_USEC": WATCHDOG_USEC}
    notifier = SdNotifier(env)
    daemon = Daemon(config, ctx, CollectorRegistry(), notifier, env)
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(daemon.run()), daemon=True)
    runner.start()
    try:
        check_lifecycle(daemon, rec, labels)
        check_health_endpoint(daemon)
        daemon.request_stop("test")
        runner.join(WAIT_S)
        wait_until(lambda: rec.beats[-1].state in ("stopped", "failed"), "the last heartbeat", WAIT_S)
    finally:
        daemon.request_stop("test")
        runner.join(WAIT_S)
        rec.stop.set()
        bus_thread.join()
        sub.close(linger=0)
        notifier.close()
    assert codes == [0]
    assert rec.notified("STOPPING=1") and rec.notified("STATUS=")
    summary = daemon.status.summary()["cameras"]
    assert summary["line"]["published"] == VIDEO_FRAMES and summary["line"]["unaccounted"] == 0
    assert summary["ghost"] == {
        "captured": 0,
        "published": 0,
        "verdicts": {},
        "dropped": {},
        "unaccounted": 0,
    }
    assert daemon.metrics_port is not None
    assert_released(daemon.metrics_port)
    check_clean_stop(rec)


def check_health_endpoint(daemon: Daemon) -> None:
    """/healthz: 503 while the ghost camera is down, naming it and why; /livez: 200 (no restart needed)."""
    assert daemon.metrics_port is not None
    url = f"http://127.0.0.1:{daemon.metrics_port}"
    status, body, _ = http_get(f"{url}/healthz")
    reason = body.decode()
    assert status == 503 and reason.startswith("degraded: camera ghost down: camera ghost: cannot open"), (
        reason
    )
    assert daemon.status.daemon_report()["state"] == "degraded"  # what ctl status says, the same
    status, body, _ = http_get(f"{url}/livez")
    assert status == 200 and body.decode() == reason  # alive: the camera reconnects by itself


def check_clean_stop(rec: Recorder) -> None:
    """No verdict before the first heartbeat that is not starting; a clean stop ends in stopped, not down."""
    before = rec.order[: rec.order.index("verdict")]
    opened = next(i for i, message in enumerate(before) if message != "heartbeat starting")
    assert opened > 0 and before[opened] in ("heartbeat ready", "heartbeat degraded"), before
    starting = [hb for hb in rec.beats if hb.state == "starting"]
    assert starting and all(hb.worker == "starting" for hb in starting)  # never down while starting
    last = rec.beats[-1]
    assert (last.state, last.worker) == ("stopped", "stopped")
    assert {name: cam.state for name, cam in last.cameras.items()} == {"line": "ended", "ghost": "stopped"}
    after = [
        hb for hb in rec.beats if hb.state in ("stopping", "stopped")
    ]  # a quick drain may send no stopping
    assert all(hb.worker in ("stopping", "stopped") for hb in after), [hb.worker for hb in after]
    assert all(hb.cameras["ghost"].state in ("stopping", "stopped") for hb in after)


def assert_released(port: int) -> None:
    """Nothing listens on the port any more (SO_REUSEADDR: closed connections in TIME_WAIT do not count)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))


def check_lifecycle(daemon: Daemon, rec: Recorder, labels: list[str | None]) -> None:
    """Readiness, watchdog, verdicts, heartbeat state and metrics of a running daemon."""

    wait_until(lambda: bool(rec.notified("READY=1")), "READY=1", WAIT_S)
    ready_at = rec.notified("READY=1")[0]
    assert daemon.ready_event.is_set() and daemon.metrics_port
    assert not [t for t in rec.notified("WATCHDOG=1") if t < ready_at], "watchdog pinged before ready"
    wait_until(
        lambda: len(rec.notified("WATCHDOG=1")) >= 3, "watchdog pings while the worker progresses", WAIT_S
    )
    wait_until(
        lambda: len([v for v in rec.verdicts if v[0] == "line"]) >= VIDEO_FRAMES,
        "every frame's verdict",
        WAIT_S,
    )

    line = sorted((s, v) for c, s, v in rec.verdicts if c == "line")
    assert line == [(i, "PASS" if lab is None else "FAIL") for i, lab in enumerate(labels)]
    # The file camera ends (not a fault); ghost never comes up, so the daemon reports itself degraded.
    expected_heartbeat = ("degraded", {"line": False, "ghost": False})
    wait_until(
        lambda: rec.heartbeats[-1][1:] == expected_heartbeat, "degraded heartbeat, camera ghost down", WAIT_S
    )
    assert daemon.metrics_port is not None
    samples = scrape(daemon.metrics_port)
    assert metric(samples, "inspector_ready") == 1.0
    assert metric(samples, "inspector_frames_captured_total", camera="line") == VIDEO_FRAMES
    fails = sum(1 for lab in labels if lab is not None)
    assert metric(samples, "inspector_verdicts_total", camera="line", verdict="FAIL") == fails
    assert metric(samples, "inspector_camera_reconnects_total", camera="ghost") >= 1


def test_stop_requested_during_start_up_exits_0_without_ready(
    synthetic_gallery: SyntheticGallery,
    labelled_video: LabelledVideo,
    harness: tuple[Context, Recorder, socket.socket, str],
) -> None:
    ctx, rec, _, notify_path = harness
    video, _ = labelled_video("line", 4, seed=3)
    config = daemon_config(
        synthetic_gallery.path, [CameraConfig(name="line", source=str(video))], free_port()
    )
    env = {"NOTIFY_SOCKET": notify_path}
    with SdNotifier(env) as notifier:
        daemon = Daemon(config, ctx, CollectorRegistry(), notifier, env)
        daemon.request_stop("test")
        assert daemon.run() == 0
    wait_until(lambda: bool(rec.notified("STOPPING=1")), "STOPPING=1", WAIT_S)
    assert not rec.notified("READY=1") and not daemon.ready_event.is_set()


@pytest.mark.parametrize("corruption", ["garbage", "truncated"])
def test_corrupt_gallery_is_refused_before_ready_and_releases_the_bus_and_metrics_ports(
    tmp_path: Path,
    labelled_video: LabelledVideo,
    harness: tuple[Context, Recorder, socket.socket, str],
    synthetic_gallery: SyntheticGallery,
    corruption: str,
) -> None:
    ctx, rec, _, notify_path = harness
    video, _ = labelled_video("line", 4, seed=3)
    broken = tmp_path / "broken.safetensors"
    good = synthetic_gallery.path.read_bytes()
    broken.write_bytes(b"not a gallery" if corruption == "garbage" else good[: len(good) - 100])
    bus_port, metrics_port = free_port(), free_port()
    config = daemon_config(broken, [CameraConfig(name="line", source=str(video))], bus_port)
    config.metrics = MetricsConfig(port=metrics_port)
    notifier = SdNotifier({"NOTIFY_SOCKET": notify_path})
    daemon = Daemon(config, ctx, CollectorRegistry(), notifier, {})
    with pytest.raises(GalleryError, match="broken.safetensors"):
        daemon.run()
    notifier.status("test-sentinel")  # datagrams arrive in order: once this is seen, any READY=1 would be too
    wait_until(lambda: bool(rec.notified("STATUS=test-sentinel")), "sentinel", WAIT_S)
    notifier.close()
    assert not rec.notified("READY=1") and not daemon.ready_event.is_set()
    for port in (bus_port, metrics_port):
        assert_released(port)


def test_a_model_key_that_disagrees_with_the_gallery_is_refused_before_ready(
    labelled_video: LabelledVideo,
    harness: tuple[Context, Recorder, socket.socket, str],
    synthetic_gallery: SyntheticGallery,
) -> None:
    ctx, rec, _, notify_path = harness
    video, _ = labelled_video("line", 4, seed=3)
    bus_port = free_port()
    config = daemon_config(synthetic_gallery.path, [CameraConfig(name="line", source=str(video))], bus_port)
    config.model = ModelConfig(image_k=synthetic_gallery.model.image_k + 1)
    notifier = SdNotifier({"NOTIFY_SOCKET": notify_path})
    daemon = Daemon(config, ctx, CollectorRegistry(), notifier, {})
    with pytest.raises(ConfigError) as info:
        daemon.run()
    (line,) = info.value.problems
    assert line.startswith("model.image_k: ") and str(synthetic_gallery.path) in line
    notifier.status("test-sentinel")
    wait_until(lambda: bool(rec.notified("STATUS=test-sentinel")), "sentinel", WAIT_S)
    notifier.close()
    assert not rec.notified("READY=1") and not daemon.ready_event.is_set()
    assert_released(bus_port)

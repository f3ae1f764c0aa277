"""Daemon demo: the synthetic line as a video-file camera, the real daemon, and its verdicts printed as they arrive."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import zmq
from prometheus_client import CollectorRegistry

from inspector.bus.tail import TailPrinter
from inspector.bus.wire import VERDICT_TOPIC_PREFIX, decode_verdict
from inspector.config.batching import BatchingConfig
from inspector.config.bus import BusConfig
from inspector.config.calibration import CalibrationConfig
from inspector.config.camera import CameraConfig
from inspector.config.logs import LoggingConfig
from inspector.config.metrics import MetricsConfig
from inspector.config.model import ModelConfig
from inspector.config.root import InspectorConfig
from inspector.config.runtime import RuntimeConfig
from inspector.config.worker import WorkerConfig
from inspector.core.names import EXIT_FAILURE, EXIT_OK
from inspector.daemon.lifecycle import Daemon
from inspector.demo.data import write_demo_video, write_good_part_images
from inspector.model.build import build_and_calibrate
from inspector.ops.logs import configure_logging
from inspector.ops.sdnotify import SdNotifier

CAMERA = "line1"
POLL_MS = 100
READY_TIMEOUT_S = 300.0
QUIET_AFTER_END_S = 3.0  # after the video ended, stop when no verdict arrived for this long
DAEMON_JOIN_TIMEOUT_S = 60.0
LOCALHOST = "127.0.0.1"

# Small images keep the demo quick on a laptop CPU; every score-relevant setting is explicit.
DEMO_MODEL = ModelConfig(
    resize_px=160,
    crop_px=128,
    image_score="map_max",
    image_k=5,
    pixel_k=5,
    neighbourhood_px=1,
    stage_fusion="mean",
    stages=(0, 1, 2),
)


@dataclass(frozen=True)
class DaemonDemoSettings:
    """Size and pace of the daemon demo."""

    frames: int = 48
    fps: float = 4.0
    defect_every: int = 4
    size_px: int = 160
    gallery_images: int = 40
    gallery_seed: int = 7
    line_seed: int = 3
    model: ModelConfig = field(default_factory=lambda: DEMO_MODEL)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)


def build_demo_gallery(workdir: Path, settings: DaemonDemoSettings) -> Path:
    """Build and calibrate a gallery from known-good parts filmed by the same (MJPG) camera."""
    images = write_good_part_images(
        workdir / "good_parts", settings.gallery_images, settings.fps, settings.size_px, settings.gallery_seed
    )
    gallery = workdir / "line1.gallery"
    build_and_calibrate(images, gallery, settings.model, settings.runtime, CalibrationConfig())
    return gallery


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        port: int = sock.getsockname()[1]
        return port


def demo_config(video: Path, gallery: Path, settings: DaemonDemoSettings, bus_port: int) -> InspectorConfig:
    """The daemon configuration of the demo: one paced video-file camera, local bus and metrics.

    The model settings are the gallery's own (the daemon takes them from it), so none are given here.
    """
    return InspectorConfig(
        runtime=settings.runtime,
        cameras=[CameraConfig(name=CAMERA, source=str(video), fps=settings.fps, queue_size=64)],
        worker=WorkerConfig(gallery=gallery),
        batching=BatchingConfig(max_batch=4, max_wait_ms=50.0, deadline_ms=30_000.0),
        bus=BusConfig(bind=f"tcp://{LOCALHOST}:{bus_port}"),
        metrics=MetricsConfig(bind_address=LOCALHOST, port=0),
        logging=LoggingConfig(level="warning"),
    )


def run_daemon_demo(workdir: Path, out: TextIO, settings: DaemonDemoSettings | None = None) -> int:
    """Run the daemon on a generated video of good and defective parts and print its verdicts.

    Builds a gallery from good parts, writes the line video, starts the daemon in this process with the
    video as a file camera, subscribes to its bus and prints each verdict (as ``inspector tail`` does) next
    to the part's true label, then stops the daemon gracefully.

    Returns:
        0 when every frame got a verdict and each PASS/FAIL matches its label, 1 otherwise.
    """
    settings = settings or DaemonDemoSettings()
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"building a gallery from {settings.gallery_images} good parts ...", file=out, flush=True)
    gallery = build_demo_gallery(workdir, settings)
    video = workdir / "line1.avi"
    labels = write_demo_video(
        video, settings.frames, settings.fps, settings.defect_every, settings.size_px, settings.line_seed
    )
    bus_port = _free_port()
    config = demo_config(video, gallery, settings, bus_port)
    configure_logging(config.logging.level, "console")
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(config.bus.bind)
    daemon = Daemon(config, context, CollectorRegistry(), SdNotifier({}), {})
    runner = threading.Thread(target=daemon.run, name="daemon", daemon=True)
    runner.start()
    try:
        return _watch(daemon, sub, labels, out)
    finally:
        daemon.request_stop("demo finished")
        runner.join(DAEMON_JOIN_TIMEOUT_S)
        sub.close(linger=0)
        context.term()


def _watch(daemon: Daemon, sub: zmq.Socket[bytes], labels: list[str | None], out: TextIO) -> int:
    if not daemon.ready_event.wait(READY_TIMEOUT_S):
        print("demo: the daemon did not become ready", file=out)
        return EXIT_FAILURE
    print(
        f"daemon ready: verdicts on {daemon.config.bus.bind}, metrics on "
        f"http://{LOCALHOST}:{daemon.metrics_port}/metrics\n"
        f"  (in another terminal: inspector tail --connect {daemon.config.bus.bind})",
        file=out,
        flush=True,
    )
    printer = TailPrinter()
    verdicts: dict[int, str] = {}
    try:
        last_at = time.monotonic()
        while not _finished(daemon, len(labels), len(verdicts), last_at):
            if not sub.poll(POLL_MS):
                continue
            parts = sub.recv_multipart()
            lines, is_verdict = printer.on_message(parts)
            if is_verdict and parts[0].startswith(VERDICT_TOPIC_PREFIX.encode("ascii")):
                _, header, _ = decode_verdict(parts)
                verdicts[header.seq] = header.verdict
                last_at = time.monotonic()
                label = labels[header.seq] if header.seq < len(labels) else None
                lines[-1] += f"   [part: {label or 'good'}]"
            for line in lines:
                print(line, file=out, flush=True)
    except KeyboardInterrupt:
        print("demo: interrupted", file=out)
        return EXIT_FAILURE
    return _report(verdicts, labels, out)


def _finished(daemon: Daemon, expected: int, received: int, last_at: float) -> bool:
    """Every frame published, or the video ended and the bus has been quiet (frames were dropped)."""
    counts = daemon.status.summary()["cameras"].get(CAMERA, {})
    done = counts.get("captured", 0) >= expected and counts.get("unaccounted", 1) == 0
    if received >= expected:
        return True
    return done and received >= counts.get("published", 0) and time.monotonic() - last_at > QUIET_AFTER_END_S


def _report(verdicts: dict[int, str], labels: list[str | None], out: TextIO) -> int:
    right = sum(1 for seq, v in verdicts.items() if v == ("PASS" if labels[seq] is None else "FAIL"))
    defective = sum(1 for label in labels if label is not None)
    print(
        f"demo: {right}/{len(labels)} parts got the expected verdict "
        f"({defective} defective, {len(labels) - len(verdicts)} without a verdict)",
        file=out,
    )
    return EXIT_OK if right == len(labels) else EXIT_FAILURE

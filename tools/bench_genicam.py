"""GenICam benchmark: frames/s and capture latency through the daemon, beside arv-camera-test-0.8 on the same camera.

In one run, on one camera streaming at ``--rate-hz``: first Aravis' own ``arv-camera-test-0.8`` reads it for
``--duration-s`` (the reference frame rate), then ``inspector run`` with the same camera as ``kind = "genicam"``
(free run) for as long. Prints frames/s of both and their ratio (frames the daemon captured, and verdicts it
published), and per verdict the capture latency: from the frame's arrival on the host (Aravis' buffer time) to
the camera process handing it on, then to the model worker taking it, and the whole path to the published
verdict. The gallery is built from the
camera's own frames (the demo model, crop 128). ``--fake`` starts Aravis' fake GigE Vision camera on 127.0.0.1
and stops it by PID at the end (one per host).

    .venv/bin/python tools/bench_genicam.py --fake                       # fake camera, 10 frames/s, 20 s each
    .venv/bin/python tools/bench_genicam.py --source 192.168.10.21 --rate-hz 25 --duration-s 60
"""

from __future__ import annotations

import inspector as _package  # noqa: F401 - first: sets OMP_WAIT_POLICY before torch loads

# isort: split

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import zmq

from inspector.bus.wire import VerdictHeader, decode_verdict
from inspector.capture.aravis import load_aravis
from inspector.config.calibration import CalibrationConfig
from inspector.config.runtime import RuntimeConfig
from inspector.demo.daemon import DEMO_MODEL
from inspector.model.build import build_gallery
from inspector.model.thresholds import calibrate_gallery

CAMERA = "gige"
MS_PER_S = 1000.0
READY_TIMEOUT_S = 600.0
STOP_TIMEOUT_S = 120.0
FAKE_START_S = 30.0
GALLERY_FRAMES = 16
GRAB_TIMEOUT_US = 5_000_000
POLL_MS = 50
REFERENCE_TOOL = "arv-camera-test-0.8"
REFERENCE_ATTEMPTS = 2  # a second run when the first completes no frame (Aravis' late-frame discard)
FAKE_TOOL = "arv-fake-gv-camera-0.8"
PER_SECOND = re.compile(r"^\s*(\d+) frames/s")
COMPLETED = re.compile(r"n_completed_buffers\s*=\s*(\d+)")


@dataclass
class Received:
    """Verdicts and their arrival, recorded by a SUB thread."""

    verdicts: list[VerdictHeader] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def fake_camera(start: bool) -> Iterator[None]:
    """Aravis' fake GigE Vision camera on 127.0.0.1 for the run (stopped by PID), when asked for."""
    if not start:
        yield
        return
    proc = subprocess.Popen(
        [FAKE_TOOL, "-i", "127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        aravis, deadline = load_aravis(), time.monotonic() + FAKE_START_S
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{FAKE_TOOL} did not start (another one on this host?)")
            try:
                camera = aravis.Camera.new("127.0.0.1")  # it answers: up (control released again below)
            except Exception:  # noqa: BLE001 - GLib.Error until the fake camera listens
                time.sleep(0.2)
                continue
            del camera
            if proc.poll() is None:
                break
        yield
    finally:
        proc.kill()
        proc.wait()


def grab_gallery(source: str, pixel_format: str, folder: Path) -> list[Path]:
    """Frames of the camera itself, for a gallery of its own size (converted as the daemon converts them)."""
    from inspector.capture.pixels import to_bgr

    aravis = load_aravis()
    camera = aravis.Camera.new(source)
    camera.set_pixel_format_from_string(pixel_format)
    camera.clear_triggers()
    stream = camera.create_stream(None, None)
    for _ in range(4):
        stream.push_buffer(aravis.Buffer.new_allocate(camera.get_payload()))
    camera.start_acquisition()
    paths: list[Path] = []
    try:
        while len(paths) < GALLERY_FRAMES:
            buffer = stream.timeout_pop_buffer(GRAB_TIMEOUT_US)
            if buffer is None:
                raise SystemExit(f"camera {source} sent no frame within {GRAB_TIMEOUT_US / 1e6:g} s")
            if buffer.get_status() == aravis.BufferStatus.SUCCESS:
                image = to_bgr(buffer.get_image_data(), buffer.get_image_width(), buffer.get_image_height(),
                               pixel_format)  # fmt: skip
                paths.append(folder / f"frame_{len(paths):03d}.png")
                cv2.imwrite(str(paths[-1]), image)
            stream.push_buffer(buffer)
    finally:
        camera.stop_acquisition()
        del stream, camera
    return paths


def _reference_run(source: str, rate_hz: float, duration_s: float) -> tuple[int, str]:
    """One run of arv-camera-test-0.8: (completed buffers, its stdout)."""
    args = [REFERENCE_TOOL, "-n", source, "-f", f"{rate_hz:g}", f"--duration={duration_s:g}"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=duration_s + 60.0, check=False)
    found = COMPLETED.search(done.stdout)
    if done.returncode != 0 or found is None:
        raise SystemExit(
            f"{REFERENCE_TOOL} failed ({done.returncode}): {done.stdout[-500:]}{done.stderr[-500:]}"
        )
    return int(found.group(1)), done.stdout


def reference_rate(source: str, rate_hz: float, duration_s: float) -> tuple[float, str]:
    """Frames/s that arv-camera-test-0.8 reads from the camera: completed buffers over the duration.

    A run that completes no buffer at all is run once more, saying so on stderr: Aravis 0.8.26 can discard
    every frame of a new stream as "late" (docs/cameras.md, section 9), the reference tool's stream included.
    """
    completed, stdout = _reference_run(source, rate_hz, duration_s)
    for attempt in range(2, REFERENCE_ATTEMPTS + 1):
        if completed > 0:
            break
        print(f"bench_genicam: {REFERENCE_TOOL} completed no frame; run {attempt}", file=sys.stderr)
        completed, stdout = _reference_run(source, rate_hz, duration_s)
    seconds = [int(m.group(1)) for line in stdout.splitlines() if (m := PER_SECOND.match(line))]
    return completed / duration_s, " ".join(map(str, seconds))


def write_config(folder: Path, gallery: Path, args: argparse.Namespace, ports: dict[str, int]) -> Path:
    genicam = f'{{pixel_format = "{args.pixel_format}", frame_rate_hz = {args.rate_hz!r}}}'
    text = f"""shutdown_timeout_s = 30
[[cameras]]
name = "{CAMERA}"
kind = "genicam"
source = {json.dumps(args.source)}
gallery = {json.dumps(str(gallery))}
queue_size = 64
genicam = {genicam}
[batching]
max_batch = 4
deadline_ms = 60000
[bus]
bind = "tcp://127.0.0.1:{ports["bus"]}"
[metrics]
port = {ports["metrics"]}
[logging]
format = "json"
"""
    path = folder / "bench.toml"
    path.write_text(text, encoding="utf-8")
    return path


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def captured_total(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    pattern = re.compile(rf'^inspector_frames_captured_total{{camera="{CAMERA}"}} (\S+)$', re.MULTILINE)
    found = pattern.search(text)
    return float(found.group(1)) if found else 0.0


def record(endpoint: str, received: Received, stop: threading.Event) -> None:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"verdict.")
    sub.connect(endpoint)
    while not stop.is_set():
        if sub.poll(POLL_MS):
            header = decode_verdict(sub.recv_multipart())[1]
            with received.lock:
                received.verdicts.append(header)
    sub.close(linger=0)
    context.term()


def wall(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


LATENCIES = (
    "capture (arrival -> handed on)",  # Aravis' buffer time to the camera process handing the frame on
    "arrival -> model worker",  # ... plus the wait in the queues in front of the model
    "arrival -> verdict published",
)


def capture_ms(verdict: VerdictHeader) -> tuple[float, float, float]:
    """The :data:`LATENCIES` of one verdict, milliseconds."""
    whole = (wall(verdict.published_at) - wall(verdict.captured_at)) * MS_PER_S
    in_child = whole - verdict.latency_ms.get("end_to_end", 0.0)  # arrival -> the camera process read it
    return in_child, in_child + verdict.latency_ms.get("queue", 0.0), whole


def run_daemon(
    config: Path, ports: dict[str, int], duration_s: float, warmup_s: float
) -> tuple[float, float, list[VerdictHeader]]:
    """(captured frames/s, verdicts/s, the verdicts of the measured window)."""
    received, stop = Received(), threading.Event()
    recorder = threading.Thread(target=record, args=(f"tcp://127.0.0.1:{ports['bus']}", received, stop))
    recorder.start()
    daemon = subprocess.Popen([sys.executable, "-m", "inspector.cli", "run", "--config", str(config)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert daemon.stderr is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        for line in daemon.stderr:
            if '"daemon_ready"' in line:
                break
            if time.monotonic() > deadline:
                raise SystemExit("the daemon did not become ready")
        else:
            raise SystemExit(f"the daemon exited ({daemon.wait()}) before ready")
        threading.Thread(target=lambda: [None for _ in daemon.stderr or ()], daemon=True).start()
        time.sleep(warmup_s)
        with received.lock:
            start_count = len(received.verdicts)
        start_captured, started = captured_total(ports["metrics"]), time.monotonic()
        time.sleep(duration_s)
        with received.lock:
            window = received.verdicts[start_count:]
        elapsed = time.monotonic() - started
        captured = (captured_total(ports["metrics"]) - start_captured) / elapsed
    finally:
        daemon.terminate()
        daemon.wait(STOP_TIMEOUT_S)
        stop.set()
        recorder.join()
    return captured, len(window) / elapsed, window


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source", default="127.0.0.1", help="camera: device id, serial number or IP address"
    )
    parser.add_argument("--fake", action="store_true", help=f"start {FAKE_TOOL} on 127.0.0.1 for the run")
    parser.add_argument("--rate-hz", type=float, default=10.0, help="camera frame rate, frames/s")
    parser.add_argument("--duration-s", type=float, default=20.0, help="each measurement, seconds")
    parser.add_argument("--warmup-s", type=float, default=5.0, help="daemon running before it is measured")
    parser.add_argument("--pixel-format", default="Mono8")
    args = parser.parse_args()
    for tool in (REFERENCE_TOOL, *((FAKE_TOOL,) if args.fake else ())):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: tools/bootstrap.sh --genicam installs aravis-tools")
    with fake_camera(args.fake), tempfile.TemporaryDirectory(prefix="bench-genicam-") as tmp:
        folder = Path(tmp)
        (folder / "frames").mkdir()
        images = grab_gallery(args.source, args.pixel_format, folder / "frames")
        gallery = folder / "camera.safetensors"
        build_gallery(images, gallery, DEMO_MODEL, RuntimeConfig())
        calibrate_gallery(gallery, RuntimeConfig(), CalibrationConfig())
        reference, per_second = reference_rate(args.source, args.rate_hz, args.duration_s)
        ports = {"bus": free_port(), "metrics": free_port()}
        config = write_config(folder, gallery, args, ports)
        height, width = np.asarray(cv2.imread(str(images[0]))).shape[:2]
        captured, published, window = run_daemon(config, ports, args.duration_s, args.warmup_s)
    print(f"camera {args.source} ({args.pixel_format} {width}x{height}) at {args.rate_hz:g} frames/s, "
          f"{args.duration_s:g} s each; {REFERENCE_TOOL} per second: {per_second}")  # fmt: skip
    print(f"{'path':<28}{'frames/s':>10}{'ratio':>8}")
    for name, rate in ((REFERENCE_TOOL, reference), ("daemon: frames captured", captured),
                       ("daemon: verdicts published", published)):  # fmt: skip
        print(f"{name:<28}{rate:>10.2f}{rate / reference if reference else float('nan'):>8.3f}")
    if window:
        pairs = np.array([capture_ms(v) for v in window])
        for index, name in enumerate(LATENCIES):
            values = sorted(pairs[:, index])
            p95 = values[min(len(values) - 1, int(0.95 * len(values)))]
            print(f"{name:<32} p50 {statistics.median(values):8.2f} ms   p95 {p95:8.2f} ms   n={len(values)}")
        errors = sum(v.verdict in ("ERROR", "TIMEOUT") for v in window)
        print(f"verdicts ERROR/TIMEOUT in the window: {errors} of {len(window)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

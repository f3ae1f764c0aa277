"""Soak: the real daemon for a while with camera flaps and subscriber stalls; frames accounted, resources flat.

Builds a small gallery of synthetic parts, writes one looping demo video per camera and starts ``inspector
run`` with ``--cameras`` video cameras. While it runs: every ``--flap-s`` seconds one camera's process is
killed with SIGKILL (in turn; the daemon respawns it, within its restart budget), and a second subscriber stops
reading for ``--stall-s`` every other flap (the main subscriber reads all along). Every ``--sample-s`` it
samples the resident memory, open file descriptors and threads of the whole process tree (daemon and camera
processes) from /proc. At the end it stops the daemon with SIGTERM and prints frames in, verdicts out, drops by
reason (the daemon's own final summary), the verdicts the main subscriber got, the series and the slopes per
minute after ``--warmup-s``.

    .venv/bin/python tools/soak.py --duration-s 120 --check      # the CI soak (tests/tools/test_soak.py)
    nice .venv/bin/python tools/soak.py --duration-s 1800 --cameras 3
"""

from __future__ import annotations

import inspector as _package  # noqa: F401 - first: sets OMP_WAIT_POLICY before torch loads

# isort: split

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from inspector.bus.wire import decode_verdict

FRAME_SIDE_PX = 160
VIDEO_FRAMES = 40
CAMERA_FPS = 4.0
GALLERY_IMAGES = 20
START_TIMEOUT_S = 600.0
STOP_TIMEOUT_S = 120.0
POLL_MS = 100
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
MIB = float(1 << 20)
S_PER_MIN = 60.0
# --check bounds on the slopes after warm-up, per minute (flat: growth this small is noise over minutes)
MAX_RSS_MIB_PER_MIN = 8.0
MAX_FDS_PER_MIN = 2.0
MAX_THREADS_PER_MIN = 2.0


@dataclass
class Sample:
    """The process tree at one moment."""

    at_s: float
    rss_mib: float
    fds: int
    threads: int
    processes: int


@dataclass
class Bus:
    """What the subscribers received."""

    verdicts: dict[str, int] = field(default_factory=dict)
    stalled_verdicts: int = 0
    stalls: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def tree(root: int) -> list[int]:
    """``root`` and every process below it."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    out, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, ppid in parents.items() if ppid in frontier]
        out += frontier
    return out


def sample(root: int, started: float) -> Sample:
    """Resident memory, fds and threads summed over the tree."""
    rss = fds = threads = n = 0
    for pid in tree(root):
        try:
            fields = (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1]).split()
            rss += int(fields[21]) * PAGE_BYTES
            threads += int(fields[17])
            fds += len(os.listdir(f"/proc/{pid}/fd"))
            n += 1
        except (OSError, ValueError, IndexError):
            continue
    return Sample(time.monotonic() - started, rss / MIB, fds, threads, n)


def slope_per_min(samples: list[Sample], attr: str) -> float:
    """Least-squares slope of a series, per minute."""
    if len(samples) < 2:
        return 0.0
    x = np.array([s.at_s for s in samples])
    y = np.array([float(getattr(s, attr)) for s in samples])
    return float(np.polyfit(x, y, 1)[0]) * S_PER_MIN


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def prepare(work: Path, cameras: int, bus: str) -> Path:
    """Gallery, videos and the daemon config; returns the config path."""
    from inspector.config.calibration import CalibrationConfig
    from inspector.config.runtime import RuntimeConfig
    from inspector.demo.daemon import DEMO_MODEL
    from inspector.demo.data import write_demo_video, write_good_part_images
    from inspector.model.build import build_and_calibrate

    images = write_good_part_images(work / "good", GALLERY_IMAGES, CAMERA_FPS, FRAME_SIDE_PX, 7)
    gallery = work / "gallery.safetensors"
    build_and_calibrate(images, gallery, DEMO_MODEL, RuntimeConfig(), CalibrationConfig())
    text = ""
    for i in range(cameras):
        video = work / f"cam{i}.avi"
        write_demo_video(video, VIDEO_FRAMES, CAMERA_FPS, 4, FRAME_SIDE_PX, seed=10 + i)
        text += f'[[cameras]]\nname = "cam{i}"\nsource = "{video}"\nloop = true\nfps = {CAMERA_FPS}\n'
        text += "queue_size = 32\nretry_initial_s = 0.2\nretry_max_s = 1.0\n"
    text = "shutdown_timeout_s = 60\n" + text  # a root key comes before every table
    text += f'[worker]\ngallery = "{gallery}"\n[batching]\nmax_batch = 4\n'
    text += f'max_wait_ms = 50\ndeadline_ms = 60000\n[bus]\nbind = "{bus}"\nsndhwm = 100000\n'
    text += '[metrics]\nenabled = false\n[logging]\nformat = "json"\n'
    config = work / "inspector.toml"
    config.write_text(text, encoding="utf-8")
    return config


def subscribe(context: zmq.Context[zmq.Socket[bytes]], bus: str) -> zmq.Socket[bytes]:
    """A SUB socket on every verdict."""
    sock = context.socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, b"verdict.")
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(bus)
    return sock


def read_bus(
    sock: zmq.Socket[bytes], got: Bus, stop: threading.Event, stalled: threading.Event | None
) -> None:
    """Count verdicts per camera (main) or in total (the stalling subscriber, which pauses while asked)."""
    while not stop.is_set():
        if stalled is not None and stalled.is_set():
            stop.wait(POLL_MS / 1000.0)
            continue
        if not sock.poll(POLL_MS):
            continue
        header = decode_verdict(sock.recv_multipart())[1]
        with got.lock:
            if stalled is None:
                got.verdicts[header.camera] = got.verdicts.get(header.camera, 0) + 1
            else:
                got.stalled_verdicts += 1


def read_logs(proc: subprocess.Popen[str], logs: list[dict[str, Any]]) -> None:
    """Collect the daemon's JSON log lines."""
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("{"):
            logs.append(json.loads(line))


def children(pid: int) -> list[int]:
    """The daemon's camera processes (spawned multiprocessing children)."""
    out = []
    for child in tree(pid)[1:]:
        try:
            cmd = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmd and b"resource_tracker" not in cmd:
            out.append(child)
    return out


def main() -> int:
    """Run the soak; with --check exit 1 unless every frame is accounted for and the slopes are flat."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=120.0)
    parser.add_argument("--cameras", type=int, default=2)
    parser.add_argument("--flap-s", type=float, default=20.0, help="seconds between camera process kills")
    parser.add_argument("--stall-s", type=float, default=8.0, help="how long the second subscriber stalls")
    parser.add_argument("--sample-s", type=float, default=2.0)
    parser.add_argument("--warmup-s", type=float, default=30.0, help="slopes are fitted after this")
    parser.add_argument("--check", action="store_true", help="exit 1 unless accounted and flat")
    parser.add_argument("--series", action="store_true", help="print every sample")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        return soak(args, Path(tmp))


def soak(args: argparse.Namespace, work: Path) -> int:
    """The soak run; returns the exit status."""
    bus = f"tcp://127.0.0.1:{free_port()}"
    config = prepare(work, args.cameras, bus)
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    got, stop, stalled = Bus(), threading.Event(), threading.Event()
    readers = [
        threading.Thread(target=read_bus, args=(subscribe(context, bus), got, stop, s), daemon=True)
        for s in (None, stalled)
    ]
    for r in readers:
        r.start()
    cmd = [sys.executable, "-m", "inspector.cli", "run", "--config", str(config)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    logs: list[dict[str, Any]] = []
    threading.Thread(target=read_logs, args=(proc, logs), daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not any(e.get("event") == "daemon_ready" for e in list(logs)):
        if proc.poll() is not None or time.monotonic() > deadline:
            print(f"daemon did not become ready (exit {proc.poll()})", file=sys.stderr)
            return 1
        time.sleep(0.2)
    samples, flaps = run_phase(args, proc, got, stalled)
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(STOP_TIMEOUT_S)
    time.sleep(1.0)  # the last verdicts in flight on the bus
    stop.set()
    for r in readers:
        r.join()
    context.destroy(linger=0)
    summary = next((e for e in logs if e.get("event") == "daemon_stopped"), None)
    return report(args, code, summary, got, samples, flaps)


def run_phase(
    args: argparse.Namespace, proc: subprocess.Popen[str], got: Bus, stalled: threading.Event
) -> tuple[list[Sample], int]:
    """Sample, flap cameras and stall the second subscriber until the duration is over."""
    started = time.monotonic()
    next_flap, flaps, stall_until = started + args.flap_s, 0, 0.0
    samples: list[Sample] = []
    while (now := time.monotonic()) - started < args.duration_s:
        samples.append(sample(proc.pid, started))
        if now >= next_flap:
            pids = children(proc.pid)
            if pids:
                os.kill(pids[flaps % len(pids)], signal.SIGKILL)
                flaps += 1
            if flaps % 2 == 1:
                stalled.set()
                stall_until = now + args.stall_s
                got.stalls += 1
            next_flap = now + args.flap_s
        if stall_until and now >= stall_until:
            stalled.clear()
            stall_until = 0.0
        time.sleep(args.sample_s)
    stalled.clear()
    return samples, flaps


def report(
    args: argparse.Namespace,
    code: int,
    summary: dict[str, Any] | None,
    got: Bus,
    samples: list[Sample],
    flaps: int,
) -> int:
    """Print the accounting, the series and the slopes; the exit status for --check."""
    problems = [] if code == 0 else [f"daemon exit status {code}"]
    if summary is None:
        problems.append("no daemon_stopped summary")
        cameras: dict[str, Any] = {}
    else:
        cameras = summary["cameras"]
    print(
        f"== soak: {args.cameras} cameras, {args.duration_s:g} s, {flaps} camera kills, {got.stalls} stalls"
    )
    print(f"{'camera':<8} {'frames_in':>9} {'verdicts':>9} {'dropped':>8} {'received':>9}  drops by reason")
    for name, cam in sorted(cameras.items()):
        dropped = sum(cam["dropped"].values())
        received = got.verdicts.get(name, 0)
        print(
            f"{name:<8} {cam['captured']:>9} {cam['published']:>9} {dropped:>8} {received:>9}  {cam['dropped']}"
        )
        if cam["captured"] != cam["published"] + dropped or cam["unaccounted"]:
            problems.append(f"{name}: frames in != verdicts + counted drops")
        if received != cam["published"]:
            problems.append(f"{name}: subscriber received {received} of {cam['published']} verdicts")
    print(f"stalled subscriber received {got.stalled_verdicts} verdicts")
    if args.series:
        print("at_s rss_mib fds threads processes")
        for s in samples:
            print(f"{s.at_s:.0f} {s.rss_mib:.1f} {s.fds} {s.threads} {s.processes}")
    after = [s for s in samples if s.at_s >= args.warmup_s]
    slopes = {attr: slope_per_min(after, attr) for attr in ("rss_mib", "fds", "threads")}
    first, last = (after[0], after[-1]) if after else (None, None)
    print(
        f"after warm-up ({len(after)} samples): " + ", ".join(f"{k} {v:+.3f}/min" for k, v in slopes.items())
    )
    if first and last:
        print(f"rss {first.rss_mib:.1f} -> {last.rss_mib:.1f} MiB, fds {first.fds} -> {last.fds}, "
              f"threads {first.threads} -> {last.threads}")  # fmt: skip
    bounds = {"rss_mib": MAX_RSS_MIB_PER_MIN, "fds": MAX_FDS_PER_MIN, "threads": MAX_THREADS_PER_MIN}
    problems += [f"{k} grows {slopes[k]:+.3f}/min (bound {b:g})" for k, b in bounds.items() if slopes[k] > b]
    for line in problems:
        print(f"PROBLEM {line}")
    return 1 if args.check and problems else 0


if __name__ == "__main__":
    sys.exit(main())

"""Daemon start-up benchmark: seconds from process start to the first heartbeat and to systemd READY=1.

Builds a default gallery (the shipped model settings) from generated good parts, writes a daemon config
with a looping folder camera, then starts the real ``inspector run`` process ``--reps`` times with a
NOTIFY_SOCKET and a bus subscriber, and prints each run and the median. Only the CLI is used, so the same
command measures any revision of the tree the same way.

    .venv/bin/python tools/bench_startup.py            # 3 runs
    .venv/bin/python tools/bench_startup.py --reps 5 --keep /tmp/startup
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import zmq

INSPECTOR = Path(sys.executable).with_name("inspector")
READY_TIMEOUT_S = 600.0
STOP_TIMEOUT_S = 60.0
GOOD_IMAGES = 12
IMAGE_SIDE_PX = 256
NOTIFY_DATAGRAM_MAX = 4096
POLL_MS = 50
LOCALHOST = "127.0.0.1"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _write_parts(folder: Path) -> None:
    """Plain textured discs: enough for a gallery whose scores do not matter here."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:IMAGE_SIDE_PX, :IMAGE_SIDE_PX]
    disc = (yy - IMAGE_SIDE_PX / 2) ** 2 + (xx - IMAGE_SIDE_PX / 2) ** 2 < (IMAGE_SIDE_PX * 0.4) ** 2
    for i in range(GOOD_IMAGES):
        img = rng.normal(60, 8, (IMAGE_SIDE_PX, IMAGE_SIDE_PX, 3))
        img[disc] += 120
        cv2.imwrite(str(folder / f"part_{i:03d}.png"), np.clip(img, 0, 255).astype(np.uint8))


def _prepare(work: Path) -> Path:
    parts = work / "parts"
    _write_parts(parts)
    gallery = work / "startup.gallery"
    subprocess.run(
        [str(INSPECTOR), "gallery", "build", "--images", str(parts), "--out", str(gallery)],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    config = work / "inspector.toml"
    config.write_text(
        f'[[cameras]]\nname = "cam1"\nsource = "{parts}"\nkind = "folder"\nloop = true\nfps = 2.0\n\n'
        f'[worker]\ngallery = "{gallery}"\n\n'
        f'[bus]\nbind = "tcp://{LOCALHOST}:{_free_port()}"\n\n'
        f'[metrics]\nbind_address = "{LOCALHOST}"\nport = 0\n\n'
        '[logging]\nlevel = "warning"\nformat = "json"\n',
        encoding="utf-8",
    )
    return config


def _bus_endpoint(config: Path) -> str:
    for line in config.read_text(encoding="utf-8").splitlines():
        if line.startswith("bind = "):
            return line.split('"')[1]
    raise ValueError(f"{config}: no bus bind")


def _one_run(config: Path, work: Path, context: zmq.Context[zmq.Socket[bytes]]) -> tuple[float, float]:
    """(seconds to the first heartbeat, seconds to READY=1) of one daemon start."""
    notify_path = Path(tempfile.mkdtemp(prefix="su", dir="/tmp")) / "notify"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"heartbeat")
    sub.connect(_bus_endpoint(config))
    env = {**os.environ, "NOTIFY_SOCKET": str(notify_path)}
    started = time.monotonic()
    proc = subprocess.Popen(
        [str(INSPECTOR), "run", "--config", str(config)], env=env, cwd=work,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    first_heartbeat: float | None = None
    ready: float | None = None
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    poller.register(notify.fileno(), zmq.POLLIN)
    try:
        while ready is None:
            if time.monotonic() - started > READY_TIMEOUT_S or proc.poll() is not None:
                raise RuntimeError(f"daemon not ready (exit status {proc.poll()})")
            events = dict(poller.poll(POLL_MS))
            if sub in events:
                sub.recv_multipart()
                if first_heartbeat is None:
                    first_heartbeat = time.monotonic() - started
            if notify.fileno() in events and b"READY=1" in notify.recv(NOTIFY_DATAGRAM_MAX).split(b"\n"):
                ready = time.monotonic() - started
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(STOP_TIMEOUT_S)
        sub.close(linger=0)
        notify.close()
        shutil.rmtree(notify_path.parent, ignore_errors=True)
    return (first_heartbeat if first_heartbeat is not None else ready), ready


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print one line per run and the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--reps", type=int, default=3, help="daemon starts measured")
    parser.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temp dir)")
    args = parser.parse_args(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="inspector-startup-"))
    work.mkdir(parents=True, exist_ok=True)
    config = _prepare(work)
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    heartbeats, readies = [], []
    try:
        for rep in range(args.reps):
            heartbeat_s, ready_s = _one_run(config, work, context)
            heartbeats.append(heartbeat_s)
            readies.append(ready_s)
            print(f"run {rep + 1}: first heartbeat {heartbeat_s:.2f} s, READY=1 {ready_s:.2f} s", flush=True)
    finally:
        context.term()
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print(
        f"median of {args.reps}: first heartbeat {statistics.median(heartbeats):.2f} s, "
        f"READY=1 {statistics.median(readies):.2f} s  (load average {os.getloadavg()[0]:.2f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

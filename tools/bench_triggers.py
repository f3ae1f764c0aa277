"""Trigger benchmark: trigger-to-verdict latency through the real daemon, beside the compute time per frame.

Builds two galleries of synthetic parts (products ``a`` and ``b``), writes a looping line video, starts
``inspector run`` with that video as an external-trigger camera, then sends ``--triggers`` triggers at
``--rate`` per second on the PULL socket while a SUB socket records each verdict. Halfway, a control-socket
``product`` command switches the camera to ``b``. Prints trigger-to-verdict latency p50/p99, the compute time
per frame the same verdicts report (their ``latency_ms`` compute stages), the ratio of the two, and the
changeover time (command to the first verdict on the new gallery).

    .venv/bin/python tools/bench_triggers.py                     # 100 triggers at 5/s, demo model (crop 128)
    .venv/bin/python tools/bench_triggers.py --model defaults    # the shipped defaults (crop 224)
"""

from __future__ import annotations

import inspector as _package  # noqa: F401 - first: sets OMP_WAIT_POLICY before torch loads

# isort: split

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zmq

from inspector.bus.control import request
from inspector.bus.wire import VerdictHeader, decode_verdict
from inspector.config.model import ModelConfig
from inspector.core.names import COMPUTE_STAGES
from inspector.demo.daemon import DEMO_MODEL, DaemonDemoSettings, build_demo_gallery
from inspector.demo.data import write_demo_video

MS_PER_S = 1000.0
READY_TIMEOUT_S = 600.0
REQUEST_TIMEOUT_S = 60.0
DRAIN_TIMEOUT_S = 120.0
CAMERA = "line"
POLL_MS = 20
PERCENTILES = (50.0, 99.0)


@dataclass
class Run:
    """Send and arrival times (monotonic) by part id, and the verdicts received."""

    sent: dict[str, float] = field(default_factory=dict)
    arrived: dict[str, float] = field(default_factory=dict)
    verdicts: dict[str, VerdictHeader] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--triggers", type=int, default=100, help="triggers sent (default 100)")
    p.add_argument("--rate", type=float, default=5.0, help="triggers per second (default 5)")
    p.add_argument("--camera-fps", type=float, default=25.0, help="frames/s the camera films (default 25)")
    p.add_argument(
        "--model", choices=["demo", "defaults"], default="demo", help="SPADE settings of the galleries"
    )
    p.add_argument("--size-px", type=int, default=160, help="video frame side (default 160)")
    p.add_argument("--gallery-images", type=int, default=30, help="good parts per gallery (default 30)")
    return p.parse_args(argv)


def prepare(work: Path, args: argparse.Namespace) -> tuple[Path, dict[str, int]]:
    """Galleries, video and config; returns the config file and the ports."""
    model: ModelConfig = DEMO_MODEL if args.model == "demo" else ModelConfig()
    galleries = {}
    for name, seed in (("a", 7), ("b", 11)):
        settings = DaemonDemoSettings(size_px=args.size_px, gallery_images=args.gallery_images, gallery_seed=seed,
                                      model=model)  # fmt: skip
        galleries[name] = build_demo_gallery(work / name, settings)
    video = work / "line.avi"
    write_demo_video(video, 40, args.camera_fps, 4, args.size_px, seed=3)
    ports = {name: free_port() for name in ("triggers", "control", "bus")}
    products = "".join(f'[[products]]\nname = "{n}"\ngallery = "{g}"\n' for n, g in galleries.items())
    config = work / "bench.toml"
    config.write_text(
        f'{products}[[cameras]]\nname = "{CAMERA}"\nsource = "{video}"\nloop = true\nfps = {args.camera_fps}\n'
        'trigger = "external"\nproduct = "a"\n'
        f'[triggers]\nbind = "tcp://127.0.0.1:{ports["triggers"]}"\n'
        f'[control]\nenabled = true\nbind = "tcp://127.0.0.1:{ports["control"]}"\n'
        "[batching]\nmax_batch = 4\nmax_wait_ms = 5\ndeadline_ms = 60000\n"
        f'[bus]\nbind = "tcp://127.0.0.1:{ports["bus"]}"\n[metrics]\nenabled = false\n[logging]\nlevel = "warning"\n',
        encoding="utf-8",
    )
    return config, ports


def connect(
    context: zmq.Context[zmq.Socket[bytes]], ports: dict[str, int]
) -> tuple[zmq.Socket[bytes], zmq.Socket[bytes]]:
    """A SUB socket on the daemon's verdicts and a PUSH socket to its trigger socket."""
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"verdict.")
    sub.connect(f"tcp://127.0.0.1:{ports['bus']}")
    push = context.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{ports['triggers']}")
    return sub, push


def record(sub: zmq.Socket[bytes], run: Run, stop: threading.Event) -> None:
    """Record every verdict's arrival time (thread)."""
    while not stop.is_set():
        if not sub.poll(POLL_MS):
            continue
        parts = sub.recv_multipart()
        if not parts[0].startswith(b"verdict."):
            continue
        _, header, _ = decode_verdict(parts)
        with run.lock:
            run.arrived[header.part_id or ""] = time.monotonic()
            run.verdicts[header.part_id or ""] = header


def wait_ready(context: zmq.Context[zmq.Socket[bytes]], control: str, proc: subprocess.Popen[bytes]) -> None:
    """Poll the control socket until the daemon answers ready."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"daemon exited with {proc.returncode}")
        try:
            if request(context, control, {"cmd": "status"}, 2.0).get("state") in ("ready", "degraded"):
                return
        except Exception:  # noqa: BLE001 - not listening yet
            time.sleep(0.2)
    raise RuntimeError("daemon not ready")


def send_triggers(
    args: argparse.Namespace, push: zmq.Socket[bytes], run: Run, switch: threading.Event
) -> None:
    """Triggers at the rate; set ``switch`` halfway (the changeover is sent by the caller)."""
    period = 1.0 / args.rate
    start = time.monotonic()
    for i in range(args.triggers):
        due = start + i * period
        time.sleep(max(0.0, due - time.monotonic()))
        part = f"T-{i:06d}"
        with run.lock:
            run.sent[part] = time.monotonic()
        push.send(json.dumps({"camera": CAMERA, "part_id": part}).encode())
        if i == args.triggers // 2:
            switch.set()


def report(args: argparse.Namespace, run: Run, changeover: tuple[float, float, float]) -> None:
    """Print the latencies, the compute time, their ratio and the changeover."""
    parts = [p for p in run.sent if p in run.arrived]
    latency = np.array([(run.arrived[p] - run.sent[p]) * MS_PER_S for p in parts])
    compute = [sum(run.verdicts[p].latency_ms.get(s, 0.0) for s in COMPUTE_STAGES) for p in parts]
    verdicts = [run.verdicts[p].verdict for p in parts]
    p50, p99 = (float(np.percentile(latency, q)) for q in PERCENTILES)
    median_compute = statistics.median(compute)
    print(
        f"bench_triggers: {args.triggers} triggers at {args.rate:g}/s, camera filming at {args.camera_fps:g} fps, "
        f"{args.model} model settings; {len(parts)}/{args.triggers} verdicts "
        f"({', '.join(f'{v} {verdicts.count(v)}' for v in sorted(set(verdicts)))})"
    )
    print(
        f"trigger to verdict: p50 {p50:.1f} ms, p99 {p99:.1f} ms | compute per frame (median of the verdicts' "
        f"stages): {median_compute:.1f} ms | p50 / compute = {p50 / median_compute:.2f}, "
        f"p99 / compute = {p99 / median_compute:.2f}"
    )
    answered_ms, first_ms, next_trigger_ms = changeover
    print(
        f"changeover a -> b: command answered in {answered_ms:.1f} ms; first verdict on the new gallery "
        f"{first_ms:.1f} ms after the command (the next trigger was sent {next_trigger_ms:.1f} ms after it)"
    )


def changeover(context: zmq.Context[zmq.Socket[bytes]], control: str, run: Run) -> tuple[float, float, float]:
    """Switch to product b; (answer ms, first b verdict ms, next trigger ms) after the command."""
    asked = time.monotonic()
    answer = request(
        context, control, {"cmd": "product", "camera": CAMERA, "product": "b"}, REQUEST_TIMEOUT_S
    )
    answered = time.monotonic()
    if not answer.get("ok"):
        raise RuntimeError(f"product command refused: {answer}")
    deadline = asked + DRAIN_TIMEOUT_S
    while time.monotonic() < deadline:
        with run.lock:
            b_parts = [p for p, v in run.verdicts.items() if v.product == "b"]
        if b_parts:
            first = min(run.arrived[p] for p in b_parts)
            next_sent = min(run.sent[p] for p in b_parts)
            return (answered - asked) * MS_PER_S, (first - asked) * MS_PER_S, (next_sent - asked) * MS_PER_S
        time.sleep(POLL_MS / MS_PER_S)
    raise RuntimeError("no verdict on product b")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print its three lines."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_triggers_") as tmp:
        config, ports = prepare(Path(tmp), args)
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        sub, push = connect(context, ports)
        control = f"tcp://127.0.0.1:{ports['control']}"
        proc = subprocess.Popen([sys.executable, "-m", "inspector.cli", "run", "--config", str(config)])
        run, stop, switch = Run(), threading.Event(), threading.Event()
        recorder = threading.Thread(target=record, args=(sub, run, stop), daemon=True)
        try:
            wait_ready(context, control, proc)
            recorder.start()
            sender = threading.Thread(target=send_triggers, args=(args, push, run, switch), daemon=True)
            sender.start()
            switch.wait()
            result = changeover(context, control, run)
            sender.join()
            deadline = time.monotonic() + DRAIN_TIMEOUT_S
            while len(run.arrived) < args.triggers and time.monotonic() < deadline:
                time.sleep(POLL_MS / MS_PER_S)
            report(args, run, result)
        finally:
            stop.set()
            proc.terminate()
            proc.wait(DRAIN_TIMEOUT_S)
            sub.close(linger=0)
            push.close(linger=0)
            context.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())

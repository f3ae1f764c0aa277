"""PLC benchmark: trigger-to-result latency through OPC UA beside the same through ZeroMQ, in one run.

Starts the real daemon (``tools/bench_triggers.py``'s galleries, video and external-trigger camera) with its
OPC UA server inside (``[opcua] enabled``). Then, one part at a time and alternating between the two paths:
ZeroMQ sends the trigger on the PULL socket and waits for the part's verdict on a SUB socket; OPC UA calls
the camera's ``Trigger`` method and waits for the part's result on a data-change subscription of
``LastResult/Result`` (as a PLC does). Prints p50/p99 of each path and their ratio.

    .venv/bin/python tools/bench_plc.py                   # 40 parts per path, demo model (crop 128)
    .venv/bin/python tools/bench_plc.py --model defaults  # the shipped defaults (crop 224)
"""

from __future__ import annotations

import inspector as _package  # noqa: F401 - first: sets OMP_WAIT_POLICY before torch loads

# isort: split

import argparse
import asyncio
import json
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
from asyncua.client.client import Client
from bench_triggers import (
    CAMERA,
    MS_PER_S,
    PERCENTILES,
    POLL_MS,
    Run,
    connect,
    free_port,
    prepare,
    record,
    wait_ready,
)

from inspector.plc.server import ENDPOINT_PATH, NAMESPACE_URI

RESULT_TIMEOUT_S = 120.0
CLIENT_TIMEOUT_S = 60.0
RECORD_QUEUE = 100
WAIT_POLL_S = 0.001


@dataclass
class Arrivals:
    """When each part's result reached the OPC UA subscription (monotonic)."""

    at: dict[str, float] = field(default_factory=dict)

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        """asyncua's callback: note the part's arrival."""
        if val.ResultId > 0:
            self.at.setdefault(val.PartId, time.monotonic())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", type=int, default=40, help="parts per path (default 40)")
    p.add_argument("--camera-fps", type=float, default=25.0, help="frames/s the camera films (default 25)")
    p.add_argument(
        "--model", choices=["demo", "defaults"], default="demo", help="SPADE settings of the galleries"
    )
    p.add_argument("--size-px", type=int, default=160, help="video frame side (default 160)")
    p.add_argument("--gallery-images", type=int, default=30, help="good parts per gallery (default 30)")
    p.add_argument(
        "--publish-ms", type=float, default=10.0, help="the subscription's publishing interval (default 10)"
    )
    return p.parse_args(argv)


async def until(arrived: dict[str, float], part: str, what: str) -> float:
    """Poll from the loop until ``part`` is in ``arrived``; the time it was seen there."""
    deadline = time.monotonic() + RESULT_TIMEOUT_S
    while part not in arrived:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {what} for {part} within {RESULT_TIMEOUT_S:g} s")
        await asyncio.sleep(WAIT_POLL_S)
    return time.monotonic()


async def measure(
    args: argparse.Namespace, port: int, push: zmq.Socket[bytes], run: Run
) -> dict[str, list[float]]:
    """Alternate one ZeroMQ part and one OPC UA part; the latencies (ms) of each path."""
    latencies: dict[str, list[float]] = {"zeromq": [], "opcua": []}
    async with Client(f"opc.tcp://127.0.0.1:{port}{ENDPOINT_PATH}", timeout=CLIENT_TIMEOUT_S) as c:
        ns = await c.get_namespace_index(NAMESPACE_URI)
        cam = await c.nodes.objects.get_child([f"{ns}:Inspector", f"{ns}:Cameras", f"{ns}:{CAMERA}"])
        await c.load_data_type_definitions()
        arrivals = Arrivals()
        sub = await c.create_subscription(args.publish_ms, arrivals)
        result = await cam.get_child([f"{ns}:LastResult", f"{ns}:Result"])
        await sub.subscribe_data_change(result, queuesize=RECORD_QUEUE)
        for i in range(args.parts):
            part = f"Z-{i:05d}"
            sent = time.monotonic()
            push.send(json.dumps({"camera": CAMERA, "part_id": part}).encode())
            got = await until(run.arrived, part, "bus verdict")
            latencies["zeromq"].append((got - sent) * MS_PER_S)
            part = f"U-{i:05d}"
            sent = time.monotonic()
            seq, error = await cam.call_method(f"{ns}:Trigger", part, "")
            if seq < 0:
                raise RuntimeError(f"Trigger refused: {error}")
            got = await until(arrivals.at, part, "OPC UA result")
            latencies["opcua"].append((got - sent) * MS_PER_S)
    return latencies


def report(args: argparse.Namespace, latencies: dict[str, list[float]]) -> None:
    """Print p50/p99 per path and the OPC UA / ZeroMQ ratios."""
    stats = {name: [float(np.percentile(v, q)) for q in PERCENTILES] for name, v in latencies.items()}
    print(
        f"bench_plc: {args.parts} parts per path, one at a time, alternating; {args.model} model settings; "
        f"camera filming at {args.camera_fps:g} fps; OPC UA publishing interval {args.publish_ms:g} ms"
    )
    for name, (p50, p99) in stats.items():
        print(f"trigger to result via {name:6s}: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    (z50, z99), (u50, u99) = stats["zeromq"], stats["opcua"]
    print(f"OPC UA / ZeroMQ: p50 {u50 / z50:.2f}x, p99 {u99 / z99:.2f}x (+{u50 - z50:.1f} ms at p50)")


def start_daemon(work: Path, args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], dict[str, int]]:
    """The bench_triggers config with the OPC UA server inside; the daemon process and the ports."""
    config, ports = prepare(work, args)
    ports["opcua"] = free_port()
    with config.open("a", encoding="utf-8") as f:
        f.write(f"[opcua]\nenabled = true\nport = {ports['opcua']}\nallow_anonymous = true\n")
    proc = subprocess.Popen([sys.executable, "-m", "inspector.cli", "run", "--config", str(config)])
    return proc, ports


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print its lines."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_plc_") as tmp:
        proc, ports = start_daemon(Path(tmp), args)
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        sub, push = connect(context, ports)
        run, stop = Run(), threading.Event()
        recorder = threading.Thread(target=record, args=(sub, run, stop), daemon=True)
        try:
            wait_ready(context, f"tcp://127.0.0.1:{ports['control']}", proc)
            recorder.start()
            report(args, asyncio.run(measure(args, ports["opcua"], push, run)))
        finally:
            stop.set()
            proc.terminate()
            proc.wait(RESULT_TIMEOUT_S)
            recorder.join(POLL_MS)
            sub.close(linger=0)
            push.close(linger=0)
            context.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())

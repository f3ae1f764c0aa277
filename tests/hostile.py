"""What the hostile-input tests share: a daemon with every socket open, and clients that misbehave on them."""

from __future__ import annotations

import json
import resource
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from inspector.bus.control import request
from inspector.bus.wire import VerdictHeader
from inspector.daemon.serving import DEATH_FAULT_ENV
from tests.processes import DaemonProcess, Subscriber
from tests.support import HTTP_TIMEOUT_S, free_port, scrape, wait_until
from tests.toml_config import BATCHING, tcp, video_camera, write_daemon_config

FREE = "free"  # the free-running camera that must keep publishing throughout
LINE = "line"  # the external-trigger camera the PLC drives
CAMERA_FPS = 4.0
TRIGGER_TIMEOUT_MS = 1000.0
HEADER_TIMEOUT_S = 2.0  # the HTTP listeners close a silent connection this fast in the tests
HEARTBEAT_S = 0.25
NOFILE = 1024  # the daemon runs with the soft and hard descriptor limit of the finding
REQUEST_TIMEOUT_S = 60.0
POLL_MS = 50
# Runs the daemon with RLIMIT_NOFILE lowered, then replaces itself with it (same pid).
_SET_LIMIT = (
    f"import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, ({NOFILE}, {NOFILE})); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)
LIMIT_FILES = (sys.executable, "-c", _SET_LIMIT)

Context = zmq.Context[zmq.Socket[bytes]]


@dataclass
class HostileLine:
    """A running daemon (two cameras, two products, every socket and output on) and a recording subscriber."""

    daemon: DaemonProcess
    bus: Subscriber
    context: Context
    ports: dict[str, int]
    archive: Path

    @property
    def control(self) -> str:
        """The control socket's endpoint."""
        return tcp(self.ports["control"])

    def ctl(self, **payload: Any) -> dict[str, Any]:
        """One control request, its answer."""
        return request(self.context, self.control, payload, REQUEST_TIMEOUT_S)

    def raw_ctl(self, *frames: bytes) -> dict[str, Any]:
        """A control request of these raw frames (one message), its answer decoded."""
        sock = self.context.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.connect(self.control)
            sock.send_multipart(list(frames))
            assert sock.poll(int(REQUEST_TIMEOUT_S * 1000)), f"no answer to {frames[0][:80]!r}..."
            answer: dict[str, Any] = json.loads(sock.recv())
            return answer
        finally:
            sock.close(linger=0)

    def push(self, *messages: list[bytes]) -> None:
        """Send messages (each a list of frames) on the trigger socket."""
        sock = self.context.socket(zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 5000)
        sock.setsockopt(zmq.SNDHWM, 0)
        try:
            sock.connect(tcp(self.ports["triggers"]))
            for frames in messages:
                sock.send_multipart(frames)
        finally:
            sock.close()

    def url(self, listener: str, path: str) -> str:
        """An HTTP URL of one of the daemon's listeners (metrics, results, liveview)."""
        return f"http://127.0.0.1:{self.ports[listener]}{path}"

    def metric(self, sample: str, **labels: str) -> float:
        """One sample of the daemon's /metrics."""
        return scrape(self.ports["metrics"]).get((sample, frozenset(labels.items())), 0.0)

    def verdicts(self, camera: str) -> list[VerdictHeader]:
        """Verdicts of one camera received so far."""
        return self.bus.got.of(camera)

    def verdict_for(self, part_id: str) -> VerdictHeader:
        """Wait for the verdict of one part of the line camera."""
        wait_until(lambda: any(v.part_id == part_id for v in self.verdicts(LINE)), f"a verdict for {part_id}")
        return next(v for v in self.verdicts(LINE) if v.part_id == part_id)

    def state(self) -> str:
        """The daemon state of the latest heartbeat."""
        with self.bus.got.lock:
            return self.bus.got.heartbeats[-1].state if self.bus.got.heartbeats else "none"

    def rss_mib(self) -> float:
        """The daemon process's resident memory."""
        status = Path(f"/proc/{self.daemon.proc.pid}/status").read_text(encoding="ascii")
        kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
        return kib / 1024.0

    def log_bytes(self) -> int:
        """Bytes the daemon wrote to its log so far."""
        return sum(len(line) for line in list(self.daemon.raw))


def start_line(folder: Path, gallery: Path, video: Path) -> HostileLine:
    """Start the daemon of the hostile-input tests (its control thread dies once, after one request)."""
    for product in ("a", "b"):
        shutil.copyfile(gallery, folder / f"{product}.safetensors")
    ports = {name: free_port() for name in ("triggers", "control", "bus", "metrics", "results", "liveview")}
    http = {"enabled": True, "header_timeout_s": HEADER_TIMEOUT_S, "idle_timeout_s": 30.0}
    config = write_daemon_config(
        folder / "hostile.toml",
        root={"shutdown_timeout_s": 30},
        products=[{"name": p, "gallery": folder / f"{p}.safetensors"} for p in ("a", "b")],
        cameras=[
            video_camera(FREE, video, CAMERA_FPS, product="a"),
            video_camera(
                LINE,
                video,
                CAMERA_FPS,
                product="a",
                trigger="external",
                trigger_timeout_ms=TRIGGER_TIMEOUT_MS,
            ),
        ],
        batching={**BATCHING, "max_wait_ms": 10},
        triggers={"bind": tcp(ports["triggers"])},
        control={"enabled": True, "bind": tcp(ports["control"])},
        bus={"bind": tcp(ports["bus"]), "heartbeat_interval_s": HEARTBEAT_S, "sndhwm": 10_000},
        metrics={"port": ports["metrics"], "header_timeout_s": HEADER_TIMEOUT_S},
        archive={"directory": folder / "archive", "queue_size": 256},
        results={**http, "port": ports["results"]},
        liveview={**http, "port": ports["liveview"]},
    )
    bus = Subscriber(tcp(ports["bus"]))
    daemon = DaemonProcess(config, prefix=LIMIT_FILES, env={DEATH_FAULT_ENV: "control:1"})
    return HostileLine(daemon, bus, zmq.Context(), ports, folder / "archive")


def raise_own_file_limit(wanted: int) -> int:
    """Raise this process's soft descriptor limit towards ``wanted``; how many sockets it may open for a test."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return max(0, min(wanted, target) - 256)


def open_idle(port: int, count: int) -> list[socket.socket]:
    """``count`` TCP connections to ``port`` that send nothing (those the kernel cannot complete are skipped)."""
    opened = []
    for _ in range(count):
        try:
            opened.append(socket.create_connection(("127.0.0.1", port), timeout=HTTP_TIMEOUT_S))
        except OSError:
            continue
    return opened


def closed_by_server(sock: socket.socket, timeout_s: float) -> bool:
    """True when the server closed the connection (after a 503 or silently) within ``timeout_s``."""
    sock.settimeout(timeout_s)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if not sock.recv(4096):
                return True
    except TimeoutError:
        return False
    except OSError:
        return True  # reset by the server
    return False

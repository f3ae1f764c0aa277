"""Tests for inspector.bus.proxy: real XSUB/XPUB forwarding between real publishers (threads and processes) and SUBs."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pytest
import zmq

from inspector.bus.proxy import BusProxy, ProxyError
from inspector.bus.publisher import Publisher, PublisherError
from inspector.bus.wire import (
    HEARTBEAT_TOPIC,
    VERDICT_TOPIC_PREFIX,
    decode_heartbeat,
    decode_verdict,
    new_boot_id,
)
from inspector.cli.daemon import cmd_proxy
from inspector.cli.main import build_parser
from inspector.config.bus import BusConfig
from inspector.config.proxy import ProxyConfig
from inspector.core.names import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK
from inspector.core.records import Frame, Outcome
from inspector.demo.data import write_demo_video
from tests.support import REPO_ROOT, bus_outcome, free_port
from tests.toml_config import tcp, write_daemon_config

ANY_PORT = "tcp://127.0.0.1:*"
DEADLINE_S = 60.0  # a generous bound: CI and other work share 2 cores
POLL_MS = 20
PROCESS_EXIT_TIMEOUT_S = 60.0  # generous: a busy 2-core machine; a hang still fails
VERDICTS_PER_DAEMON = 400
LINE_QUEUE_SIZE = 10_000
NOTIFY_DATAGRAM_MAX = 4096
DAEMON_FRAMES = 16
DAEMON_FPS = 10.0
DAEMON_SIDE_PX = 160  # the size of conftest's synthetic gallery images
DAEMON_DEFECT_EVERY = 4
DAEMON_DEADLINE_S = 100.0  # two daemons loading PyTorch and warming up at once on 2 cores
HEARTBEAT_INTERVAL_S = 0.2
DAEMON_STOP_TIMEOUT_S = 30.0

Context = zmq.Context[zmq.Socket[bytes]]

# A stand-in daemon: a real Publisher in its own process. It prints its endpoint, sends heartbeats every
# 50 ms, publishes COUNT verdicts with seq 0..COUNT-1 when it reads "go", prints "done", and exits on "stop".
PUBLISHER_SCRIPT = r"""
import sys, threading
import zmq
import numpy as np
from inspector.bus.publisher import Publisher, run_heartbeats
from inspector.bus.wire import Heartbeat, new_boot_id, rfc3339
from inspector.config.bus import BusConfig
from inspector.core.records import Frame, Outcome

camera, count = sys.argv[1], int(sys.argv[2])
ctx = zmq.Context()
# A burst of count verdicts: HWM and kernel buffer sized for it (this test is about the proxy, not drops).
pub = Publisher(BusConfig(bind="tcp://127.0.0.1:*", heartbeat_interval_s=0.05, sndhwm=10000, sndbuf_bytes=0), ctx, new_boot_id())
print(pub.bind(), flush=True)
stop = threading.Event()

def snapshot():
    return Heartbeat(boot_id=pub.boot_id, published_at=rfc3339(0.0), state="ready", uptime_s=0.0,
                     frames_published=pub.verdicts_published, worker_alive=True)

beats = threading.Thread(target=run_heartbeats, args=(pub, snapshot, 0.05, stop))
beats.start()
sys.stdin.readline()
image = np.zeros((2, 2, 3), np.uint8)
for seq in range(count):
    stages = dict.fromkeys(("queue", "preprocess", "backbone", "image_knn", "pixel_match", "upsample_blur"), 0.0)
    pub.publish(Outcome(Frame(camera, seq, 0.0, 0.0, image), "PASS", score=0.5, threshold=1.0,
                        pixel_threshold=1.0, defect_area_px=0, defect_count=0, latency_ms=stages))
print("done", flush=True)
sys.stdin.readline()
stop.set()
beats.join()
pub.close()
ctx.term()
"""


class Child:
    """A child process whose stdout and stderr lines are read into bounded queues by threads."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        """Start ``args`` (environment ``env``, default inherited) with pipes on stdin, stdout and stderr."""
        self.proc = subprocess.Popen(
            args,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stdout: queue.Queue[str] = queue.Queue(LINE_QUEUE_SIZE)
        self.stderr: queue.Queue[str] = queue.Queue(LINE_QUEUE_SIZE)
        self._pumps = [
            threading.Thread(target=self._pump, args=(stream, lines), daemon=True)
            for stream, lines in ((self.proc.stdout, self.stdout), (self.proc.stderr, self.stderr))
        ]
        for pump in self._pumps:
            pump.start()

    @staticmethod
    def _pump(stream: Any, lines: queue.Queue[str]) -> None:
        for line in stream:
            lines.put(line.rstrip("\n"))

    def next_line(self, lines: queue.Queue[str], what: str) -> str:
        """The next line from ``lines`` within the deadline."""
        try:
            return lines.get(timeout=DEADLINE_S)
        except queue.Empty:
            raise AssertionError(
                f"{what}: no output within {DEADLINE_S} s (exit {self.proc.poll()})"
            ) from None

    def log_event(self, event: str) -> dict[str, Any]:
        """Read JSON log lines from stderr until one has ``event``; returns it."""
        while True:
            line = self.next_line(self.stderr, f"log event {event!r}")
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and record.get("event") == event:
                return record

    def send(self, line: str) -> None:
        """Write one line to the child's stdin."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def finish(self) -> None:
        """Close stdin and make sure the process is gone."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        try:
            self.proc.wait(PROCESS_EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(PROCESS_EXIT_TIMEOUT_S)
        for pump in self._pumps:
            pump.join(PROCESS_EXIT_TIMEOUT_S)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def terminate(proc: subprocess.Popen[Any]) -> int:
    """SIGTERM, then SIGKILL if the process has not exited in time; returns its exit status."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(DAEMON_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(PROCESS_EXIT_TIMEOUT_S)


def start_proxy_process(
    frontends: list[str], backend: str = ANY_PORT, env: dict[str, str] | None = None
) -> Child:
    """``inspector proxy`` (as ``python -m inspector.cli proxy``) with the given endpoints."""
    args = [sys.executable, "-m", "inspector.cli", "proxy", "--backend", backend]
    for frontend in frontends:
        args += ["--frontend", frontend]
    return Child(args, env)


@pytest.fixture
def context() -> Iterator[Context]:
    """A fresh ZeroMQ context, terminated after the test (which hangs if a socket was left open)."""
    ctx: Context = zmq.Context()
    yield ctx
    ctx.term()


Subscribe = Callable[[str, bytes], zmq.Socket[bytes]]


@pytest.fixture
def subscriber(context: Context) -> Iterator[Subscribe]:
    """Factory of SUB sockets (connected to an endpoint, subscribed to a topic), all closed after the test."""
    sockets: list[zmq.Socket[bytes]] = []

    def make(endpoint: str, topic: bytes) -> zmq.Socket[bytes]:
        sock = context.socket(zmq.SUB)
        sockets.append(sock)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SUBSCRIBE, topic)
        sock.connect(endpoint)
        return sock

    yield make
    for sock in sockets:
        sock.close()


def bind_when_free(publisher: Publisher) -> str:
    """Bind, retrying while the port is still held: ZeroMQ closes a listening socket asynchronously."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        try:
            return publisher.bind()
        except PublisherError:
            if time.monotonic() > deadline:
                raise
            time.sleep(POLL_MS / 1000)


def outcome(camera: str, seq: int) -> Outcome:
    """A PASS outcome of a tiny frame."""
    return bus_outcome(Frame(camera, seq, 0.0, 0.0, np.zeros((2, 2, 3), np.uint8)))


def receive_topic(sub: zmq.Socket[bytes], prefix: bytes, publish: Any = None) -> list[bytes]:
    """Receive until a message whose topic starts with ``prefix``, calling ``publish()`` while waiting."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if publish is not None:
            publish()
        if sub.poll(POLL_MS):
            parts = sub.recv_multipart()
            if parts[0].startswith(prefix):
                return parts
    raise AssertionError(f"no {prefix!r} message within {DEADLINE_S} s")


def test_two_daemons_behind_proxy_reach_one_subscriber_with_gap_free_seq_each(subscriber: Subscribe) -> None:
    cameras = ["line1-cam1", "line2-cam1"]
    daemons = [
        Child([sys.executable, "-c", PUBLISHER_SCRIPT, camera, str(VERDICTS_PER_DAEMON)])
        for camera in cameras
    ]
    proxy: Child | None = None
    try:
        endpoints = [d.next_line(d.stdout, "publisher endpoint") for d in daemons]
        proxy = start_proxy_process(endpoints)
        backend = proxy.log_event("proxy_started")["backend"]
        sub = subscriber(backend, b"")
        # Heartbeats from both boot ids prove the subscription reached both daemons through the proxy.
        boots: set[str] = set()
        while len(boots) < len(daemons):
            boots.add(decode_heartbeat(receive_topic(sub, HEARTBEAT_TOPIC.encode())).boot_id)
        for daemon in daemons:
            daemon.send("go")
        seqs: dict[tuple[str, str], list[int]] = {}
        while sum(len(s) for s in seqs.values()) < VERDICTS_PER_DAEMON * len(daemons):
            _, got, _ = decode_verdict(receive_topic(sub, VERDICT_TOPIC_PREFIX.encode()))
            seqs.setdefault((got.boot_id, got.camera), []).append(got.seq)
        sub.close()
        for daemon in daemons:
            assert daemon.next_line(daemon.stdout, "publisher done") == "done"
    finally:
        for daemon in daemons:
            daemon.finish()
        if proxy is not None:
            terminate(proxy.proc)
            proxy.finish()
    assert {camera for _, camera in seqs} == set(cameras)
    assert {boot for boot, _ in seqs} == boots
    for key, received in seqs.items():
        assert received == list(range(VERDICTS_PER_DAEMON)), f"{key}: gaps or reordering"
    assert all(d.proc.returncode == 0 for d in daemons)
    assert proxy is not None and proxy.proc.returncode == EXIT_OK


def test_proxy_process_notifies_systemd_and_exits_zero_on_sigterm() -> None:
    notify_path = tempfile.mkdtemp(prefix="pxy", dir="/tmp") + "/notify"  # AF_UNIX paths are short
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(DEADLINE_S)
    env = {**os.environ, "NOTIFY_SOCKET": notify_path}
    proxy = start_proxy_process(["tcp://127.0.0.1:1"], env=env)  # nobody there: the XSUB keeps reconnecting
    try:
        proxy.log_event("proxy_started")
        ready = notify.recv(NOTIFY_DATAGRAM_MAX).decode()
        status = notify.recv(NOTIFY_DATAGRAM_MAX).decode()
        proxy.proc.send_signal(signal.SIGTERM)
        rc = proxy.proc.wait(PROCESS_EXIT_TIMEOUT_S)
        stopping = notify.recv(NOTIFY_DATAGRAM_MAX).decode()
        stopped = proxy.log_event("proxy_stopped")
    finally:
        proxy.finish()
        notify.close()
        Path(notify_path).unlink()
        Path(notify_path).parent.rmdir()
    assert (ready, stopping) == ("READY=1", "STOPPING=1")
    assert status.startswith("STATUS=forwarding 1 bus(es) to tcp://127.0.0.1:")
    assert rc == EXIT_OK
    assert stopped["level"] == "info"


def test_malformed_backend_exits_78_naming_the_option() -> None:
    proxy = start_proxy_process(["tcp://127.0.0.1:1"], backend="not-an-endpoint")
    try:
        failed = proxy.log_event("proxy_start_failed")
        rc = proxy.proc.wait(PROCESS_EXIT_TIMEOUT_S)
    finally:
        proxy.finish()
    assert rc == EXIT_CONFIG
    assert "--backend 'not-an-endpoint'" in failed["error"]


def test_backend_port_in_use_exits_1_naming_the_address(context: Context) -> None:
    taken = context.socket(zmq.PUB)
    taken.setsockopt(zmq.LINGER, 0)
    taken.bind(ANY_PORT)
    endpoint = taken.getsockopt_string(zmq.LAST_ENDPOINT)
    proxy = start_proxy_process(["tcp://127.0.0.1:1"], backend=endpoint)
    try:
        failed = proxy.log_event("proxy_start_failed")
        rc = proxy.proc.wait(PROCESS_EXIT_TIMEOUT_S)
    finally:
        proxy.finish()
        taken.close()
    assert rc == EXIT_FAILURE
    assert endpoint in failed["error"] and "in use" in failed["error"]


def test_topic_filter_travels_upstream_and_stop_closes_every_socket(
    context: Context, subscriber: Subscribe
) -> None:
    with Publisher(BusConfig(bind=ANY_PORT), context, new_boot_id()) as pub:
        with BusProxy(ProxyConfig(frontends=(pub.endpoint,), backend=ANY_PORT), context) as proxy:
            assert proxy.running
            sub = subscriber(proxy.endpoint, b"verdict.cam2")
            seq = iter(range(10**6))

            def publish_both() -> None:
                n = next(seq)
                pub.publish(outcome("cam1", n))
                pub.publish(outcome("cam2", n))

            first = decode_verdict(receive_topic(sub, b"verdict.", publish_both))[1]
            for _ in range(20):
                publish_both()
            received = [first]
            while sub.poll(200):
                received.append(decode_verdict(sub.recv_multipart())[1])
            sub.close()
        assert not proxy.running
    assert {h.camera for h in received} == {"cam2"}
    seqs = [h.seq for h in received]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    # The fixture's context.term() returns only because stop() closed the proxy's sockets.


def test_daemon_restart_on_same_port_is_picked_up_without_restarting_proxy(
    context: Context, subscriber: Subscribe
) -> None:
    first = Publisher(BusConfig(bind=ANY_PORT, linger_ms=0), context, new_boot_id())
    endpoint = first.bind()
    second_boot = new_boot_id()
    second = Publisher(BusConfig(bind=endpoint), context, second_boot)
    try:
        with BusProxy(ProxyConfig(frontends=(endpoint,), backend=ANY_PORT), context) as proxy:
            sub = subscriber(proxy.endpoint, b"verdict.")
            _, got, _ = decode_verdict(
                receive_topic(sub, b"verdict.", lambda: first.publish(outcome("c", 0)))
            )
            first.close()
            bind_when_free(second)
            _, again, _ = decode_verdict(
                receive_topic(sub, b"verdict.", lambda: second.publish(outcome("c", 0)))
            )
    finally:
        first.close()
        second.close()
    assert got.boot_id != again.boot_id == second_boot


def test_bus_proxy_rejects_wrong_state_and_bad_frontend(context: Context) -> None:
    proxy = BusProxy(ProxyConfig(frontends=("tcp://127.0.0.1:1",), backend=ANY_PORT), context)
    with pytest.raises(ProxyError, match="must be bound"):
        proxy.start()
    proxy.bind()
    with pytest.raises(ProxyError, match="already bound"):
        proxy.bind()
    proxy.stop()
    proxy.stop()  # idempotent
    bad = BusProxy(ProxyConfig(frontends=("tcp://127.0.0.1",), backend=ANY_PORT), context)
    with pytest.raises(ProxyError, match="--frontend 'tcp://127.0.0.1'") as info:
        bad.bind()
    assert info.value.bad_endpoint


def test_add_proxy_command_registers_repeatable_frontends() -> None:
    args = build_parser().parse_args(
        ["proxy", "--frontend", "tcp://a:5556", "--frontend", "tcp://b:5556", "--backend", "tcp://*:5550"]
    )
    assert args.func is cmd_proxy
    assert args.frontend == ["tcp://a:5556", "tcp://b:5556"]
    assert args.backend == "tcp://*:5550"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["proxy", "--backend", "tcp://*:5550"])  # --frontend is required


class GalleryFile(Protocol):
    """What this file uses of conftest's ``synthetic_gallery`` fixture (a calibrated demo gallery)."""

    path: Path


def write_line_config(folder: Path, camera: str, gallery: Path, bus_port: int, seed: int) -> list[str | None]:
    """A video file, and a TOML config of one daemon with one camera playing it once; returns frame labels."""
    video = folder / f"{camera}.avi"
    labels = write_demo_video(video, DAEMON_FRAMES, DAEMON_FPS, DAEMON_DEFECT_EVERY, DAEMON_SIDE_PX, seed)
    write_daemon_config(
        folder / f"{camera}.toml",
        root={},
        cameras=[{"name": camera, "source": video, "fps": DAEMON_FPS, "queue_size": 64}],
        worker={"gallery": gallery},
        batching={"max_batch": 4, "deadline_ms": 60000.0},
        bus={"bind": tcp(bus_port), "heartbeat_interval_s": HEARTBEAT_INTERVAL_S},
        metrics={"port": 0},
    )
    return labels


def test_two_real_daemons_behind_one_proxy_deliver_every_verdict_with_gap_free_seq(
    tmp_path: Path, synthetic_gallery: GalleryFile, subscriber: Subscribe
) -> None:
    cameras = {"line1-cam": free_port(), "line2-cam": free_port()}
    labels = {
        camera: write_line_config(tmp_path, camera, synthetic_gallery.path, port, seed)
        for seed, (camera, port) in enumerate(cameras.items(), start=11)
    }
    proxy = start_proxy_process([f"tcp://127.0.0.1:{port}" for port in cameras.values()])
    daemons: list[subprocess.Popen[bytes]] = []
    heartbeats: dict[str, list[str]] = {}
    verdicts: dict[str, list[tuple[str, int, str]]] = {}
    try:
        sub = subscriber(proxy.log_event("proxy_started")["backend"], b"")
        for camera in cameras:  # subscribed before the daemons start: nothing they publish can be missed
            with (tmp_path / f"{camera}.log").open("w") as log:
                daemons.append(subprocess.Popen(
                    [sys.executable, "-m", "inspector.cli", "run", "--config", str(tmp_path / f"{camera}.toml")],
                    cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                ))  # fmt: skip
        deadline = time.monotonic() + DAEMON_DEADLINE_S
        while sum(len(v) for v in verdicts.values()) < DAEMON_FRAMES * len(cameras):
            assert time.monotonic() < deadline, (
                f"verdicts so far: { {b: len(v) for b, v in verdicts.items()} }"
            )
            if not sub.poll(POLL_MS):
                continue
            parts = sub.recv_multipart()
            if parts[0] == HEARTBEAT_TOPIC.encode():
                beat = decode_heartbeat(parts)
                heartbeats.setdefault(beat.boot_id, []).append(beat.state)
            else:
                _, got, _ = decode_verdict(parts)
                verdicts.setdefault(got.boot_id, []).append((got.camera, got.seq, got.verdict))
    finally:
        codes = [terminate(daemon) for daemon in daemons]
        terminate(proxy.proc)
        proxy.finish()
    assert len(verdicts) == len(cameras), "one boot id per daemon"
    for boot_id, received in verdicts.items():
        assert heartbeats[boot_id][0] == "starting", "heartbeats reached us before the daemon was ready"
        camera = received[0][0]
        expected = [
            (camera, seq, "PASS" if label is None else "FAIL") for seq, label in enumerate(labels[camera])
        ]
        assert received == expected, f"{camera}: gaps, reordering or wrong verdicts through the proxy"
    assert {r[0][0] for r in verdicts.values()} == set(cameras)
    assert codes == [0, 0]
    assert proxy.proc.returncode == EXIT_OK

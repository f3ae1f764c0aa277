"""MQTT output benchmark: sustained verdict messages/s through the sink into a real mosquitto (QoS 0 and 1),
and the daemon's capture-to-publish p99 with the MQTT sink off and on in one run, beside capture-to-arrival
at an MQTT subscriber.

Starts its own mosquitto on a free loopback port (``mosquitto -c CONF``, stopped by PID); the subscriber is
``mosquitto_sub`` in its own process, so the sink is measured against a broker and a reader it does not share
a Python interpreter with.

    .venv/bin/python tools/bench_mqtt.py
    .venv/bin/python tools/bench_mqtt.py --messages 50000 --no-daemon
"""

from __future__ import annotations

import inspector as _package  # noqa: F401 - first: sets OMP_WAIT_POLICY before torch loads

# isort: split

import argparse
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
from bench_daemon import (
    add_sink_phase_args,
    isolated_phase,
    sink_phase_base,
)
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import CollectorRegistry

from inspector.bus.publisher import verdict_header
from inspector.bus.wire import (
    NO_MASK,
    CameraStatus,
    Heartbeat,
    new_boot_id,
    parse_rfc3339,
    rfc3339,
)
from inspector.config.mqtt import MqttConfig
from inspector.core.records import Frame, Outcome
from inspector.ops.output_metrics import OutputMetrics
from inspector.outputs.mqtt import MqttSink
from inspector.outputs.mqtt_client import IN_FLIGHT_WINDOW

PREFIX = "bench"
CAMERA = "cam0"
WAIT_S = 600.0
POLL_S = 0.01
PROBE_TOPIC = f"{PREFIX}/probe"
MS_PER_S = 1000.0
US_PER_S = 1e6
PERCENTILES = (50.0, 99.0)
LATENCY_STAGES_MS = {"queue": 0.3, "preprocess": 2.0, "backbone": 30.0, "image_knn": 1.0, "pixel_match": 5.0,
                     "upsample_blur": 1.0}  # fmt: skip


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Mosquitto:
    """mosquitto on a free loopback port, anonymous, no per-client queue limit (nothing dropped by the broker)."""

    def __init__(self, folder: Path) -> None:
        self.port = _free_port()
        config = folder / "mosquitto.conf"
        config.write_text(
            f"user root\npersistence false\nallow_anonymous true\nmax_queued_messages 0\nlog_dest none\n"
            f"listener {self.port} 127.0.0.1\n"
        )
        self.proc = subprocess.Popen([_tool("mosquitto"), "-c", str(config)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + WAIT_S
        while not _accepts(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("mosquitto did not start")
            time.sleep(POLL_S)

    def stop(self) -> None:
        """SIGTERM by PID; wait."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(WAIT_S)


def _tool(name: str) -> str:
    found = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)
    if found is None:
        sys.exit(f"bench_mqtt: {name} is missing (apt-get install mosquitto mosquitto-clients)")
    return found


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


class Subscriber:
    """``mosquitto_sub`` on the verdict topics printing each message's arrival time, topic and payload (one
    line each: the JSON has no newline); read here."""

    def __init__(self, port: int, qos: int) -> None:
        self.arrivals: list[tuple[float, str, bytes]] = []
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            [_tool("mosquitto_sub"), "-h", "127.0.0.1", "-p", str(port), "-q", str(qos), "-t",
             f"{PREFIX}/+/verdict", "-t", PROBE_TOPIC, "-F", "%U %t %p"], stdout=subprocess.PIPE,
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + WAIT_S
        while not self.count(PROBE_TOPIC):  # subscribed once a probe comes back
            subprocess.run(
                [_tool("mosquitto_pub"), "-p", str(port), "-t", PROBE_TOPIC, "-m", "probe"], check=True
            )
            if time.monotonic() > deadline:
                raise RuntimeError("mosquitto_sub never subscribed")
            time.sleep(0.1)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            at, topic, payload = line.rstrip(b"\n").split(b" ", 2)
            with self._lock:
                self.arrivals.append((float(at), topic.decode(), payload))

    def count(self, topic_suffix: str) -> int:
        with self._lock:
            return sum(1 for _, topic, _ in self.arrivals if topic.endswith(topic_suffix))

    def verdicts(self) -> list[tuple[float, bytes]]:
        with self._lock:
            return [(at, p) for at, topic, p in self.arrivals if topic.endswith("/verdict")]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(WAIT_S)
        self._reader.join(WAIT_S)


def heartbeat() -> Heartbeat:
    """A ready daemon with one camera up (the sink's state messages read it)."""
    camera = CameraStatus(state="up", up=True, frames=1)
    return Heartbeat(boot_id="b" * 32, published_at=rfc3339(time.time()), state="ready", uptime_s=1.0,
                     cameras={CAMERA: camera}, frames_published=0, worker_alive=True)  # fmt: skip


def published_outcomes(n: int) -> list[Outcome]:
    """``n`` PASS outcomes stamped as the bus stamps them (headers of a real verdict's size), made up front."""
    boot, now, image = new_boot_id(), time.time(), np.zeros((8, 8, 3), np.uint8)
    made = []
    for seq in range(n):
        frame = Frame(CAMERA, seq, now, time.monotonic(), image, part_id=f"P-{seq:09d}", product="flange")
        outcome = Outcome(frame, "PASS", score=1.0, threshold=2.0, pixel_threshold=1.0, gallery="a" * 64,
                          defect_area_px=0, defect_count=0, latency_ms=dict(LATENCY_STAGES_MS))  # fmt: skip
        stages = {**LATENCY_STAGES_MS, "encode": 0.0, "end_to_end": 40.0}
        header = verdict_header(outcome, boot, rfc3339(now), stages, NO_MASK)
        made.append(Outcome(frame, "PASS", score=1.0, threshold=2.0, published=header.model_dump_json()))
    return made


def messages_per_second(port: int, n: int, qos: int) -> tuple[float, float, int]:
    """(verdicts/s from the sink's start, its queue full, to the subscriber's last arrival; µs per deliver on
    the pipeline's thread; header bytes)."""
    outcomes = published_outcomes(n)  # before the subscriber's process: nothing left running if this raises
    subscriber = Subscriber(port, qos)
    config = MqttConfig(enabled=True, port=port, topic_prefix=PREFIX, qos=qos, queue_size=n + 1,
                        client_id=f"bench-qos{qos}")  # fmt: skip
    sink = MqttSink(config, [CAMERA], heartbeat, lambda _c: "flange", OutputMetrics(CollectorRegistry()))
    began = time.perf_counter()
    for outcome in outcomes:  # queued before the sink starts: its thread then sends as fast as it can
        sink.deliver(outcome)
    deliver_us = (time.perf_counter() - began) * US_PER_S / n
    start = time.time()
    sink.start()  # connecting on loopback takes milliseconds of the measured seconds
    try:
        _wait(lambda: subscriber.count("/verdict") >= n, f"{n} verdicts at the subscriber")
        last = max(at for at, _ in subscriber.verdicts())
    finally:
        sink.close()
        subscriber.stop()
    assert outcomes[0].published is not None
    return n / (last - start), deliver_us, len(outcomes[0].published)


def reference_per_second(port: int, n: int, qos: int, size: int) -> float:
    """The floor: a bare paho client publishing ``n`` payloads of ``size`` bytes as fast as it can with the
    sink's in-flight window (without one, paho walks its whole queue on each acknowledgement: quadratic),
    messages/s from the first publish to the subscriber's last arrival."""
    subscriber = Subscriber(port, qos)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-reference-qos{qos}")
    client.max_inflight_messages_set(IN_FLIGHT_WINDOW)
    client.connect("127.0.0.1", port)
    client.loop_start()
    window = threading.BoundedSemaphore(IN_FLIGHT_WINDOW)  # as the sink: paho's own queue is quadratic
    client.on_publish = lambda *_args: window.release()
    payload = b"x" * size
    try:
        _wait(client.is_connected, "the reference client connected")
        start = time.time()
        for _ in range(n):
            window.acquire()
            client.publish(f"{PREFIX}/{CAMERA}/verdict", payload, qos)
        _wait(lambda: subscriber.count("/verdict") >= n, f"{n} messages at the subscriber")
        last = max(at for at, _ in subscriber.verdicts())
    finally:
        client.disconnect()
        client.loop_stop()
        subscriber.stop()
    return n / (last - start)


def _wait(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(POLL_S)


def daemon_phases(args: argparse.Namespace, work: Path, port: int) -> None:
    """The daemon with the MQTT sink off and on, the same paced cameras: the bus's end-to-end and overhead p99,
    and capture-to-arrival at an MQTT subscriber while the sink is on."""
    base = sink_phase_base(args, work)
    on = base.model_copy(update={"mqtt": MqttConfig(enabled=True, port=port, topic_prefix=PREFIX,
                                                    snapshot_max_fps=args.snapshot_fps)})  # fmt: skip
    offered = args.fps * args.cameras
    added, ages = [], []
    for _ in range(args.rounds):  # off and on alternate: a shared machine's load drifts between phases
        off_phase = isolated_phase("off", base, args, offered)
        subscriber = Subscriber(port, 1)
        try:
            on_phase = isolated_phase("on", on, args, offered)
        finally:
            subscriber.stop()
        for ph in (off_phase, on_phase):
            print(
                f"daemon, mqtt sink {ph.label:<3}: published {ph.throughput_fps:5.1f} fps, end-to-end p50 "
                f"{ph.p50_ms:.1f} ms, p99 {ph.p99_ms:.1f} ms; capture-to-publish minus compute p50 "
                f"{ph.overhead_p50_ms:.2f} ms, p99 {ph.overhead_p99_ms:.2f} ms"
            )
        added.append(on_phase.overhead_p99_ms - off_phase.overhead_p99_ms)
        arrivals = subscriber.verdicts()
        skip = int(len(arrivals) * args.warmup_s / (args.warmup_s + args.measure_s))  # start-up's verdicts
        ages += [(at - parse_rfc3339(json.loads(p)["captured_at"])) * MS_PER_S for at, p in arrivals[skip:]]
    print(
        f"the mqtt sink adds {float(np.median(added)):+.2f} ms to the p99 of capture-to-publish minus compute "
        f"(median of {len(added)} off/on pairs; aim: <= 1 ms)"
    )
    if ages:
        p50, p99 = (float(np.percentile(ages, q)) for q in PERCENTILES)
        print(f"capture to arrival at an MQTT subscriber (QoS 1, {len(ages)} verdicts): p50 {p50:.1f} ms, "
              f"p99 {p99:.1f} ms")  # fmt: skip


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=20_000, help="verdicts per QoS level (default 20000)")
    add_sink_phase_args(p)
    p.add_argument(
        "--rounds", type=int, default=1, help="daemon phases: off/on pairs, alternating (default 1)"
    )
    p.add_argument("--snapshot-fps", type=float, default=1.0, help="daemon phases: mqtt.snapshot_max_fps")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Print verdicts/s per QoS level, then the daemon's p99 with the sink off and on."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_mqtt_") as tmp:
        work = Path(tmp)
        broker = Mosquitto(work)
        try:
            for qos in (0, 1):
                rate, deliver_us, size = messages_per_second(broker.port, args.messages, qos)
                floor = reference_per_second(broker.port, args.messages, qos, size)
                print(f"qos {qos}: {args.messages} verdicts of {size} bytes: {rate:8.0f} messages/s sustained "
                      f"(aim >= 1000) = {rate / floor:.2f}x a bare paho client's {floor:.0f}/s; deliver "
                      f"{deliver_us:.1f} us each on the pipeline's thread")  # fmt: skip
            if not args.no_daemon:
                daemon_phases(args, work, broker.port)
        finally:
            broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

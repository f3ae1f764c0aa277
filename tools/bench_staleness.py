"""Staleness bound of a stalled bus subscriber, in messages and in bytes, for binary masks and anomaly maps.

Binds the real ``Publisher`` and sends verdicts at ``--rate`` per second, each with a mask as the daemon sends
it: ``binary`` (a 0/255 mask, mostly 0: about 0.8 KB on the wire) or ``anomaly_map`` (an ``anomaly_map_u8``
of a SPADE-like map: a coarse field upsampled and blurred, about 16 KB at 224 px). One subscriber reads all
along (the reference: it must lose nothing); another stops reading for ``--stall-s`` seconds, set up either as
the integration guide says (``RCVHWM`` 1, ``RCVBUF`` 64 KiB) or with the library defaults (``RCVHWM`` 1000, the
OS's auto-tuned ``RCVBUF``). Publishing goes on after the stall; the stalled subscriber reads again until the
first verdict published after the stall arrives, and the row reports what came before it: the verdicts
received late, their bytes, the oldest one's age on arrival (its ``age_ms`` plus the time since
``published_at``), how long the first fresh verdict took, and whether the seq jumped (a gap: the rest was
dropped). ``bound`` is the daemon side's share, sized from the measured message size: ``sndhwm`` messages in
ZeroMQ plus what ``2 x sndbuf_bytes`` holds in the kernel (Linux doubles SO_SNDBUF); the subscriber's own
buffers come on top. One run measures every row.

    .venv/bin/python tools/bench_staleness.py                       # 20 verdicts/s, 20 s stall
    .venv/bin/python tools/bench_staleness.py --rate 10 --stall-s 60 --sndhwm 20 --sndbuf 16384
"""

from __future__ import annotations

import inspector as _package  # noqa: F401 - first: sets OMP_WAIT_POLICY before torch loads

# isort: split

import argparse
import math
import threading
import time
from dataclasses import dataclass

import cv2
import numpy as np
import zmq

from inspector.bus.publisher import Publisher
from inspector.bus.tail import arrival_age_ms
from inspector.bus.wire import decode_verdict, new_boot_id
from inspector.config.bus import BusConfig, MaskMode
from inspector.core.names import COMPUTE_STAGES, Verdict
from inspector.core.records import Frame, Outcome

MAP_SIDE_PX = 224  # the default crop: the mask's size
COARSE_SIDE = 28  # the first pyramid stage of a 224 px crop
BLUR_SIGMA_PX = 4.0  # SPADE's Gaussian blur
PIXEL_THRESHOLD = 2.0
FAIL_EVERY = 10  # one part in ten has a defect blob
POLL_MS = 200
RESUME_DEADLINE_S = 180.0  # how long the stalled subscriber may take to get its first fresh verdict
CONNECT_TIMEOUT_S = 10.0
JOIN_TIMEOUT_S = 10.0
MS_PER_S = 1000.0
KIB = 1024.0
GUIDE_RCVBUF = 65536  # what the integration guide tells subscribers to set
LIBRARY_RCVHWM = 1000  # libzmq's default
KERNEL_FACTOR = 2  # Linux doubles SO_SNDBUF / SO_RCVBUF for its bookkeeping


@dataclass(frozen=True)
class Subscriber:
    """How the stalled subscriber set up its socket."""

    label: str
    rcvhwm: int
    rcvbuf: int  # 0: the OS default


DEFAULTS = Subscriber("defaults", LIBRARY_RCVHWM, 0)


@dataclass(frozen=True)
class Row:
    """What the stalled subscriber got after its stall, and what the active one got."""

    mask: str
    message_bytes: float
    sndbuf_bytes: int
    subscriber: str
    sent: int
    active_lost: int
    late: int
    late_kib: float
    oldest_ms: float
    resume_ms: float
    gap: bool


def spade_like_map(seq: int) -> np.ndarray:
    """An anomaly map shaped like SPADE's: a coarse field upsampled and blurred; a defect blob now and then."""
    rng = np.random.default_rng(seq)
    coarse = rng.random((COARSE_SIDE, COARSE_SIDE), dtype=np.float32) * PIXEL_THRESHOLD
    if seq % FAIL_EVERY == 0:
        y, x = rng.integers(4, COARSE_SIDE - 4, size=2)
        coarse[y - 2 : y + 2, x - 2 : x + 2] = 3.0 * PIXEL_THRESHOLD
    amap = cv2.resize(coarse, (MAP_SIDE_PX, MAP_SIDE_PX), interpolation=cv2.INTER_LINEAR)
    return np.asarray(cv2.GaussianBlur(amap, (0, 0), BLUR_SIGMA_PX), dtype=np.float32)


def outcome(seq: int) -> Outcome:
    """A scored outcome as the model worker makes one (map, mask, area, every stage timed)."""
    frame = Frame("cam1", seq, time.time(), time.monotonic(), np.zeros((4, 4, 3), np.uint8), f"P{seq:06d}")
    amap = spade_like_map(seq)
    mask = np.where(amap > PIXEL_THRESHOLD, 255, 0).astype(np.uint8)
    area = int(np.count_nonzero(mask))
    verdict: Verdict = "FAIL" if area else "PASS"
    return Outcome(
        frame, verdict, score=3.0 if area else 1.0, threshold=2.0, pixel_threshold=PIXEL_THRESHOLD,
        defect_area_px=area, defect_count=int(area > 0), anomaly_map=amap, mask=mask, gallery="0" * 64,
        latency_ms=dict.fromkeys(("queue", *COMPUTE_STAGES), 1.0),
    )  # fmt: skip


def connect(context: zmq.Context[zmq.Socket[bytes]], endpoint: str, sub: Subscriber) -> zmq.Socket[bytes]:
    """A SUB socket subscribed to every verdict, set up as ``sub`` says."""
    sock = context.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, sub.rcvhwm)
    if sub.rcvbuf:
        sock.setsockopt(zmq.RCVBUF, sub.rcvbuf)
    sock.setsockopt(zmq.SUBSCRIBE, b"verdict.")
    sock.connect(endpoint)
    return sock


def wait_connected(pub: Publisher, socks: list[zmq.Socket[bytes]]) -> None:
    """Publish seq 0 until every subscriber got one (the slow joiner), then empty them."""
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    pending = list(socks)
    while pending:
        if time.monotonic() > deadline:
            raise SystemExit("subscribers did not connect")
        pub.publish(outcome(0))
        pending = [s for s in pending if not s.poll(POLL_MS // 4)]
    for sock in socks:
        while sock.poll(POLL_MS):
            sock.recv_multipart()


def publish_at(
    pub: Publisher, rate_hz: float, first: int, stop: threading.Event, lock: threading.Lock
) -> None:
    """Publish seq ``first``, ``first + 1``, ... at ``rate_hz`` until stopped."""
    started, seq = time.monotonic(), first
    while not stop.is_set():
        stop.wait(max(0.0, started + (seq - first) / rate_hz - time.monotonic()))
        with lock:
            pub.publish(outcome(seq))
        seq += 1


def read_all(sock: zmq.Socket[bytes], out: list[tuple[int, int]], stop: threading.Event) -> None:
    """The active subscriber: read every verdict until stopped; (seq, message bytes) of each."""
    while not stop.is_set() or sock.poll(POLL_MS):
        if sock.poll(POLL_MS):
            parts = sock.recv_multipart()
            out.append((decode_verdict(parts)[1].seq, sum(len(p) for p in parts)))


def read_until_fresh(
    sock: zmq.Socket[bytes], last_of_stall: int
) -> tuple[list[tuple[int, float, int]], float]:
    """The stalled subscriber reads again: (seq, age on arrival, bytes) of each late verdict, and the time
    until the first verdict published after the stall (inf when none came within the deadline)."""
    late: list[tuple[int, float, int]] = []
    started = time.monotonic()
    while time.monotonic() - started < RESUME_DEADLINE_S:
        if not sock.poll(POLL_MS):
            continue
        parts = sock.recv_multipart()
        header = decode_verdict(parts)[1]
        if header.seq > last_of_stall:
            return late, time.monotonic() - started
        late.append((header.seq, arrival_age_ms(header, time.time()), sum(len(p) for p in parts)))
    return late, math.inf


def measure(mask: MaskMode, sndbuf: int, sndhwm: int, sub: Subscriber, rate_hz: float, stall_s: float) -> Row:
    """One stall: publish at ``rate_hz`` for ``stall_s``, then read the stalled subscriber's backlog."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    config = BusConfig(bind="tcp://127.0.0.1:*", sndhwm=sndhwm, sndbuf_bytes=sndbuf, linger_ms=0, mask=mask)
    with Publisher(config, context, new_boot_id()) as pub:
        stalled = connect(context, pub.endpoint, sub)
        active = connect(context, pub.endpoint, Subscriber("active", LIBRARY_RCVHWM, 0))
        wait_connected(pub, [stalled, active])
        received: list[tuple[int, int]] = []
        stop_reading, stop_publishing, lock = threading.Event(), threading.Event(), threading.Lock()
        reader = threading.Thread(target=read_all, args=(active, received, stop_reading), daemon=True)
        reader.start()
        n = int(rate_hz * stall_s)
        started = time.monotonic()
        for seq in range(1, n + 1):
            time.sleep(max(0.0, started + seq / rate_hz - time.monotonic()))
            with lock:
                pub.publish(outcome(seq))
        publisher = threading.Thread(target=publish_at, args=(pub, rate_hz, n + 1, stop_publishing, lock))
        publisher.start()  # the line goes on: the first verdict after the stall ends the backlog
        late, resume_s = read_until_fresh(stalled, n)
        stop_publishing.set()
        publisher.join(JOIN_TIMEOUT_S)
        stop_reading.set()
        reader.join(JOIN_TIMEOUT_S)
        stalled.close()
        active.close()
    context.term()
    seqs = [seq for seq, _, _ in late]
    sizes = [size for _, _, size in late]
    got = {seq for seq, _ in received}
    expected = set(range(1, max(got, default=0) + 1))
    return Row(
        mask=mask,
        message_bytes=float(np.mean([size for _, size in received])) if received else 0.0,
        sndbuf_bytes=sndbuf,
        subscriber=sub.label,
        sent=n,
        active_lost=len(expected - got),
        late=len(late),
        late_kib=sum(sizes) / KIB,
        oldest_ms=max((age for _, age, _ in late), default=0.0),
        resume_ms=resume_s * MS_PER_S,
        gap=bool(seqs) and (seqs[-1] < n or seqs[-1] - seqs[0] + 1 > len(seqs)),
    )


def daemon_bound(row: Row, sndhwm: int) -> int:
    """The daemon side's share in messages: sndhwm in ZeroMQ plus the kernel send buffer's worth."""
    if not row.sndbuf_bytes or not row.message_bytes:
        return 0  # the OS default buffer grows to MBs: no bound of its own
    return sndhwm + math.ceil(KERNEL_FACTOR * row.sndbuf_bytes / row.message_bytes)


def main() -> None:
    """Parse arguments, measure each mask kind, send buffer and subscriber set-up, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=20.0, help="verdicts per second")
    parser.add_argument("--stall-s", type=float, default=20.0, help="seconds the subscriber does not read")
    parser.add_argument("--sndhwm", type=int, default=BusConfig().sndhwm, help="bus.sndhwm")
    parser.add_argument("--sndbuf", type=int, default=BusConfig().sndbuf_bytes, help="bus.sndbuf_bytes")
    parser.add_argument("--masks", default="binary,anomaly_map", help="bus.mask modes to measure")
    parser.add_argument(
        "--os-default", action="store_true", help="also rows with sndbuf_bytes 0 (OS default)"
    )
    parser.add_argument("--rcvbuf", type=int, default=GUIDE_RCVBUF, help="RCVBUF of the 'guide' subscriber")
    parser.add_argument(
        "--subscribers", default="guide,defaults", help="stalled subscriber set-ups to measure"
    )
    args = parser.parse_args()
    guide = Subscriber("guide", 1, args.rcvbuf)
    subscribers = [sub for sub in (guide, DEFAULTS) if sub.label in args.subscribers.split(",")]
    masks: list[MaskMode] = [m for m in ("binary", "anomaly_map", "none") if m in args.masks.split(",")]
    buffers = [args.sndbuf, 0] if args.os_default else [args.sndbuf]
    print(
        f"== stalled subscriber, {args.rate:g} verdicts/s, {args.stall_s:g} s stall, sndhwm {args.sndhwm}; "
        f"guide subscriber: RCVHWM 1, RCVBUF {args.rcvbuf}"
    )
    print(
        f"{'mask':<12} {'msg_B':>6} {'sndbuf':>7} {'subscriber':<10} {'sent':>5} {'lost':>4} {'late':>5} "
        f"{'bound':>5} {'late_KiB':>8} {'oldest_s':>8} {'resume_s':>8} gap"
    )
    for mask in masks:
        for sndbuf in buffers:
            for sub in subscribers:
                r = measure(mask, sndbuf, args.sndhwm, sub, args.rate, args.stall_s)
                bound = daemon_bound(r, args.sndhwm)
                print(
                    f"{r.mask:<12} {r.message_bytes:>6.0f} {r.sndbuf_bytes:>7} {r.subscriber:<10} {r.sent:>5} "
                    f"{r.active_lost:>4} {r.late:>5} {bound or '-':>5} {r.late_kib:>8.1f} "
                    f"{r.oldest_ms / MS_PER_S:>8.2f} {r.resume_ms / MS_PER_S:>8.2f} {'yes' if r.gap else 'no'}",
                    flush=True,
                )


if __name__ == "__main__":
    main()

"""Staleness bound of a stalled bus subscriber: how late and how many verdicts it still gets after a stall.

Binds the real ``Publisher`` and sends verdicts with incompressible anomaly-map masks (about 4 KB, like a
64 px map) at ``--rate`` per second. One subscriber reads all along (the reference: it must lose nothing);
another stops reading for ``--stall-s`` seconds with ``RCVHWM`` 1, as in the issue. After the stall it reads
what reached it and reports: verdicts received late, the oldest one's age on arrival (its ``age_ms`` plus the
time since ``published_at``), the bytes that were held for it, and whether the seq jumped (a gap: the rest
was dropped). One row per ``SO_SNDBUF`` setting in one run: 0 (the OS default, auto-tuned) beside the
configured ``bus.sndbuf_bytes``.

    .venv/bin/python tools/bench_staleness.py                       # 20 verdicts/s, 20 s stall
    .venv/bin/python tools/bench_staleness.py --rate 10 --stall-s 60 --sndhwm 20
"""

from __future__ import annotations

import inspector as _package  # noqa: F401 - first: sets OMP_WAIT_POLICY before torch loads

# isort: split

import argparse
import threading
import time
from dataclasses import dataclass

import numpy as np
import zmq

from inspector.bus.publisher import Publisher
from inspector.bus.tail import arrival_age_ms
from inspector.bus.wire import decode_verdict, new_boot_id
from inspector.config.bus import BusConfig
from inspector.core.records import Frame, Outcome

MAP_SIDE_PX = 64
POLL_MS = 200
IDLE_MS = 1000  # the stalled subscriber's backlog is over after this long without a message
JOIN_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 10.0
MS_PER_S = 1000.0
KIB = 1024.0


@dataclass(frozen=True)
class Row:
    """What the stalled subscriber got after its stall, and what the active one got."""

    sndbuf_bytes: int
    sent: int
    active_received: int
    late: int
    late_kib: float
    oldest_ms: float
    gap: bool


def outcome(seq: int, rng: np.random.Generator) -> Outcome:
    """A PASS outcome whose anomaly map PNG does not compress."""
    frame = Frame("cam1", seq, time.time(), time.monotonic(), np.zeros((4, 4, 3), np.uint8))
    amap = rng.random((MAP_SIDE_PX, MAP_SIDE_PX), dtype=np.float32) * 4.0
    return Outcome(frame, "PASS", score=0.5, threshold=2.0, anomaly_map=amap, pixel_threshold=2.0)


def connect(context: zmq.Context[zmq.Socket[bytes]], endpoint: str, rcvhwm: int) -> zmq.Socket[bytes]:
    """A SUB socket subscribed to every verdict."""
    sock = context.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, rcvhwm)
    sock.setsockopt(zmq.SUBSCRIBE, b"verdict.")
    sock.connect(endpoint)
    return sock


def wait_connected(pub: Publisher, socks: list[zmq.Socket[bytes]], rng: np.random.Generator) -> None:
    """Publish seq 0 until every subscriber got one (the slow joiner), then empty them."""
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    pending = list(socks)
    while pending:
        if time.monotonic() > deadline:
            raise SystemExit("subscribers did not connect")
        pub.publish(outcome(0, rng))
        pending = [s for s in pending if not s.poll(POLL_MS // 4)]
    for sock in socks:
        while sock.poll(POLL_MS):
            sock.recv_multipart()


def measure(sndbuf_bytes: int, sndhwm: int, rate_hz: float, stall_s: float) -> Row:
    """One stall with this SO_SNDBUF: publish at ``rate_hz`` for ``stall_s``, then read the stalled backlog."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    rng = np.random.default_rng(1)
    config = BusConfig(bind="tcp://127.0.0.1:*", sndhwm=sndhwm, sndbuf_bytes=sndbuf_bytes, linger_ms=0)
    with Publisher(config, context, new_boot_id()) as pub:
        stalled, active = connect(context, pub.endpoint, 1), connect(context, pub.endpoint, 1000)
        wait_connected(pub, [stalled, active], rng)
        received: list[int] = []
        stop = threading.Event()
        reader = threading.Thread(target=read_all, args=(active, received, stop), daemon=True)
        reader.start()
        n = int(rate_hz * stall_s)
        started = time.monotonic()
        for seq in range(1, n + 1):
            time.sleep(max(0.0, started + seq / rate_hz - time.monotonic()))
            pub.publish(outcome(seq, rng))
        late: list[tuple[int, float, int]] = []
        while stalled.poll(IDLE_MS):
            parts = stalled.recv_multipart()
            header = decode_verdict(parts)[1]
            late.append((header.seq, arrival_age_ms(header, time.time()), sum(len(p) for p in parts)))
        stop.set()
        reader.join(JOIN_TIMEOUT_S)
        stalled.close()
        active.close()
    context.term()
    seqs = [seq for seq, _, _ in late]
    return Row(
        sndbuf_bytes=sndbuf_bytes,
        sent=n,
        active_received=len(received),
        late=len(late),
        late_kib=sum(size for _, _, size in late) / KIB,
        oldest_ms=max((age for _, age, _ in late), default=0.0),
        gap=bool(seqs) and (seqs[-1] < n or seqs[-1] - seqs[0] + 1 > len(seqs)),
    )


def read_all(sock: zmq.Socket[bytes], out: list[int], stop: threading.Event) -> None:
    """The active subscriber: read every verdict until stopped."""
    while not stop.is_set() or sock.poll(POLL_MS):
        if sock.poll(POLL_MS):
            out.append(decode_verdict(sock.recv_multipart())[1].seq)


def main() -> None:
    """Parse arguments, measure each SO_SNDBUF setting, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=20.0, help="verdicts per second")
    parser.add_argument("--stall-s", type=float, default=20.0, help="seconds the subscriber does not read")
    parser.add_argument("--sndhwm", type=int, default=BusConfig().sndhwm, help="bus.sndhwm")
    parser.add_argument("--sndbuf", type=int, default=BusConfig().sndbuf_bytes, help="bus.sndbuf_bytes")
    args = parser.parse_args()
    print(
        f"== stalled subscriber (RCVHWM 1), {args.rate:g} verdicts/s for {args.stall_s:g} s, "
        f"sndhwm {args.sndhwm}"
    )
    print(f"{'sndbuf_bytes':>12} {'sent':>6} {'active':>6} {'late':>6} {'late_KiB':>9} {'oldest_s':>9} gap")
    rows = [measure(size, args.sndhwm, args.rate, args.stall_s) for size in (0, args.sndbuf)]
    for r in rows:
        print(
            f"{r.sndbuf_bytes:>12} {r.sent:>6} {r.active_received:>6} {r.late:>6} {r.late_kib:>9.1f} "
            f"{r.oldest_ms / MS_PER_S:>9.2f} {'yes' if r.gap else 'no'}"
        )
    default, bounded = rows
    if bounded.late:
        print(f"late verdicts, OS default / configured: {default.late / bounded.late:.2f}x")
    print(
        f"staleness bound with sndbuf_bytes={args.sndbuf}: {bounded.late} verdicts, {bounded.late_kib:.0f} KiB"
    )


if __name__ == "__main__":
    main()

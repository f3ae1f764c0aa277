"""A stalled subscriber on the real daemon's bus (``pytest -m faults``): it loses verdicts with a seq gap instead
of queueing a stale backlog, while an active subscriber on the same bus receives every verdict."""

from __future__ import annotations

import statistics
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import zmq

from inspector.bus.wire import VERDICT_TOPIC_PREFIX, decode_verdict
from tests.processes import DaemonProcess
from tests.support import LabelledVideo, SyntheticGallery, free_port, wait_until
from tests.toml_config import BATCHING, NO_METRICS, daemon_toml, video_camera

pytestmark = pytest.mark.faults

WAIT_S = 300.0  # generous: a daemon start and hundreds of verdicts on 2 busy cores
SNDHWM = 20
SOCKET_BUFFER_BYTES = (
    65536  # SO_SNDBUF of the daemon and SO_RCVBUF of the stalled subscriber (as the guide says)
)
STALL_VERDICTS = 600  # published while the subscriber stalls: far more than its socket buffers hold
POLL_MS = 50

Context = zmq.Context[zmq.Socket[bytes]]


@dataclass
class Reader:
    """An active subscriber: reads and decodes every verdict on its own thread (seq and age_ms)."""

    sock: zmq.Socket[bytes]
    seqs: list[int] = field(default_factory=list)
    ages_ms: list[float] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        """Receive until stopped."""
        while not self.stop.is_set():
            if self.sock.poll(POLL_MS):
                header = decode_verdict(self.sock.recv_multipart())[1]
                self.seqs.append(header.seq)
                self.ages_ms.append(header.age_ms)


def subscribe(context: Context, endpoint: str, rcvhwm: int | None = None) -> zmq.Socket[bytes]:
    sock = context.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    if rcvhwm is not None:
        sock.setsockopt(zmq.RCVHWM, rcvhwm)
        sock.setsockopt(zmq.RCVBUF, SOCKET_BUFFER_BYTES)
    sock.setsockopt(zmq.SUBSCRIBE, VERDICT_TOPIC_PREFIX.encode())
    sock.connect(endpoint)
    return sock


def read_until_after(sock: zmq.Socket[bytes], last_of_stall: int) -> tuple[list[int], int | None]:
    """Read a stalled socket again: the seqs its buffers kept (up to ``last_of_stall``), then the first newer one."""
    kept: list[int] = []
    while sock.poll(int(WAIT_S * 1000)):
        seq = decode_verdict(sock.recv_multipart())[1].seq
        if seq > last_of_stall:
            return kept, seq
        kept.append(seq)
    return kept, None


def config_text(gallery: Path, video: Path, bus: str) -> str:
    return daemon_toml(
        root={},
        cameras=[video_camera("line", video, 10, queue_size=64)],
        worker={"gallery": gallery},
        batching={**BATCHING, "max_wait_ms": 20},
        bus={"bind": bus, "sndhwm": SNDHWM, "sndbuf_bytes": SOCKET_BUFFER_BYTES},
        metrics=NO_METRICS,
    )


def test_a_stalled_subscriber_gets_a_seq_gap_not_a_backlog_while_an_active_one_misses_nothing(
    tmp_path: Path, synthetic_gallery: SyntheticGallery, labelled_video: LabelledVideo
) -> None:
    video, _ = labelled_video("line", 20, seed=8)
    bus = f"tcp://127.0.0.1:{free_port()}"
    config = tmp_path / "inspector.toml"
    config.write_text(config_text(synthetic_gallery.path, video, bus), encoding="utf-8")
    context: Context = zmq.Context()
    stalled = subscribe(context, bus, rcvhwm=1)
    reader = Reader(subscribe(context, bus))
    thread = threading.Thread(target=reader.run, daemon=True)
    daemon = DaemonProcess(config)
    try:
        thread.start()
        daemon.wait_event("daemon_ready", WAIT_S)
        assert stalled.poll(int(WAIT_S * 1000)), "the stalled subscriber never received a first verdict"
        first = decode_verdict(stalled.recv_multipart())[1].seq  # connected; from here on it reads nothing
        wait_until(lambda: sum(1 for q in reader.seqs if q > first) >= STALL_VERDICTS, "the stall", WAIT_S)
        late, resumed = read_until_after(stalled, reader.seqs[-1])  # what the buffers kept, then a new one
        assert daemon.terminate() == 0
    finally:
        reader.stop.set()
        thread.join(WAIT_S)
        daemon.close()
        stalled.close()
        reader.sock.close()
        context.term()
    seqs = reader.seqs
    assert seqs == list(range(seqs[0], seqs[-1] + 1)), (
        "the active subscriber lost verdicts to the stalled one"
    )
    assert len(late) < STALL_VERDICTS // 2, f"the stalled subscriber got a backlog of {len(late)} verdicts"
    assert resumed is not None, "the stalled subscriber received nothing once it read again"
    assert resumed - (late[-1] if late else first) > 1, "no seq gap: the stalled subscriber lost nothing"
    during = [
        age for seq, age in zip(seqs, reader.ages_ms, strict=True) if first < seq <= first + STALL_VERDICTS
    ]
    print(
        f"stalled subscriber: {len(late)} late of {STALL_VERDICTS}; active subscriber's age_ms during the stall: "
        f"median {statistics.median(during):.1f}, max {max(during):.1f}"
    )

"""Subscriptions to the verdict bus, checked: what a subscriber may ask for, and what it may cost the daemon.

The bus socket is an XPUB in manual mode, so the daemon applies each subscription itself: only a prefix of a
topic it publishes (``heartbeat``, ``verdict.<camera>`` of its cameras) is applied; anything else is refused
(counted; that subscriber gets nothing for it). Subscriptions still cost memory inside ZeroMQ as they
arrive, so what one subscriber may send is bounded too:

* a message longer than ``MAX_SUBSCRIPTION_BYTES`` (far longer than any topic, room left for a CURVE
  handshake) drops its connection at once (``ZMQ_MAXMSGSIZE``), so no single subscription can be large;
* each subscriber's TCP connection is looked at (``TCP_INFO``, Linux) after every ``SCAN_EVERY_SUBSCRIPTIONS``
  subscriptions and every ``SCAN_INTERVAL_S``: the bytes it sent beyond its handshake and a trickle of
  heartbeat pings (``PING_BYTES_PER_S``) are charged to it; past ``bus.max_subscription_bytes`` it is
  disconnected (its subscriptions leave ZeroMQ's memory with it, and the freed memory is returned to the
  operating system);
* past ``bus.max_subscribers`` connections, the newest are disconnected.

A subscriber that is disconnected reconnects by itself (ZeroMQ) and starts with a clean slate: a client that
keeps flooding keeps being dropped, the others keep receiving every message.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from inspector.core.names import CAMERA_NAME_PATTERN

SUBSCRIBE, UNSUBSCRIBE = 1, 0
MAX_SUBSCRIPTION_BYTES = 1024  # >> 1 + len("verdict.") + 64 (the longest useful subscription); a CURVE
# INITIATE (cookie, vouch, metadata: about 300 bytes) must fit too
SCAN_EVERY_SUBSCRIPTIONS = 64  # subscription messages between two looks at the subscribers' connections
SCAN_INTERVAL_S = 5.0  # and a look at least this often
HANDSHAKE_BYTES = 1024  # ZMTP greeting and READY (or a CURVE handshake): never charged
PING_BYTES_PER_S = 2.0  # ZMTP heartbeats (a PING of about 20 bytes every 10 s) are not charged
TCP_ESTABLISHED = "01"
TCP_INFO_BYTES_RECEIVED_OFFSET = 128  # struct tcp_info: tcpi_bytes_received (u64), Linux >= 4.1
TCP_INFO_SIZE = 256
PROC_NET_TCP = (Path("/proc/self/net/tcp"), Path("/proc/self/net/tcp6"))
PROC_FDS = Path("/proc/self/fd")
VERDICT_PREFIX = b"verdict."
HEARTBEAT = b"heartbeat"
_CAMERA_NAME = re.compile(CAMERA_NAME_PATTERN)


def topic_check(cameras: Sequence[str] | None) -> Callable[[bytes], bool]:
    """Whether a subscription is a prefix of a topic the daemon publishes.

    With ``cameras``: of ``heartbeat`` or ``verdict.<camera>`` of one of them. Without: of ``heartbeat`` or of
    ``verdict.`` followed by the start of any valid camera name (``CAMERA_NAME_PATTERN``).
    """
    topics = [HEARTBEAT] + [VERDICT_PREFIX + c.encode("ascii") for c in cameras or ()]

    def allowed(topic: bytes) -> bool:
        if any(t.startswith(topic) for t in topics):
            return True
        if cameras is not None or not topic.startswith(VERDICT_PREFIX):
            return False
        rest = topic[len(VERDICT_PREFIX) :]
        try:
            name = rest.decode("ascii")
        except UnicodeDecodeError:
            return False
        return not name or _CAMERA_NAME.match(name) is not None  # a camera name's prefix is one too

    return allowed


@dataclass
class _Subscriber:
    first_seen: float
    last_bytes: int
    last_seen: float
    charged: int


@dataclass(frozen=True)
class Dropped:
    """A subscriber disconnected: its peer address, why, and the bytes charged to it."""

    peer: str
    reason: str
    charged_bytes: int


class SubscriberLimits:
    """The subscribers' TCP connections to the bus port, charged for what they send; over a cap: dropped.

    Reads ``/proc/self/net/tcp*`` and ``/proc/self/fd`` and asks each connection's ``TCP_INFO`` (no ZeroMQ
    call, so it runs beside the sockets' own threads); elsewhere than Linux it finds nothing and drops nobody.
    """

    def __init__(
        self,
        port: int,
        max_bytes: int,
        max_subscribers: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Watch the connections to local TCP ``port``."""
        self._port = port
        self._max_bytes = max_bytes
        self._max_subscribers = max_subscribers
        self._clock = clock
        self._known: dict[int, _Subscriber] = {}  # socket inode -> what it sent

    def scan(self) -> list[Dropped]:
        """Charge every connection for what it sent since the last scan; disconnect those over a cap."""
        now = self._clock()
        connections = _bus_connections(self._port)
        left = set(self._known) - set(connections)
        for inode in left:
            del self._known[inode]
        dropped: list[Dropped] = []
        for inode, (peer, fd) in sorted(connections.items(), key=lambda item: self._age_key(item[0])):
            received = _bytes_received(fd, inode)
            if received is None:
                continue
            sub = self._charge(inode, received, now)
            reason = self._over(sub, len(self._known))
            if reason and _disconnect(fd, inode):
                dropped.append(Dropped(peer, reason, sub.charged))
                del self._known[inode]
        if dropped or left:
            release_free_memory()
        return dropped

    def _age_key(self, inode: int) -> float:
        known = self._known.get(inode)
        return known.first_seen if known is not None else float("inf")

    def _charge(self, inode: int, received: int, now: float) -> _Subscriber:
        sub = self._known.get(inode)
        if sub is None:
            sub = _Subscriber(now, received, now, max(0, received - HANDSHAKE_BYTES))
            self._known[inode] = sub
            return sub
        allowance = PING_BYTES_PER_S * (now - sub.last_seen)
        sub.charged += max(0, int(received - sub.last_bytes - allowance))
        sub.last_bytes, sub.last_seen = received, now
        return sub

    def _over(self, sub: _Subscriber, count: int) -> str:
        if sub.charged > self._max_bytes:
            return f"sent {sub.charged} bytes of subscriptions: more than bus.max_subscription_bytes"
        if count > self._max_subscribers and sub is max(self._known.values(), key=lambda s: s.first_seen):
            return f"{count} subscribers: more than bus.max_subscribers (the newest is dropped)"
        return ""


def _bus_connections(port: int) -> dict[int, tuple[str, int]]:
    """Established TCP connections to local ``port`` of this process: inode -> (peer address, fd)."""
    peers: dict[int, str] = {}
    for table in PROC_NET_TCP:
        try:
            lines = table.read_text(encoding="ascii").splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != TCP_ESTABLISHED:
                continue
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port:
                peers[int(fields[9])] = fields[2]
    if not peers:
        return {}
    found: dict[int, tuple[str, int]] = {}
    try:
        entries = os.listdir(PROC_FDS)
    except OSError:
        return {}
    for entry in entries:
        try:
            link = os.readlink(PROC_FDS / entry)
        except OSError:
            continue
        if link.startswith("socket:[") and (inode := int(link[8:-1])) in peers:
            found[inode] = (peers[inode], int(entry))
    return found


def _with_socket(fd: int, inode: int, use: Callable[[socket.socket], int | None]) -> int | None:
    """Call ``use`` on a duplicate of ``fd`` when it is still the socket ``inode`` (fd numbers get reused)."""
    try:
        dup = os.dup(fd)
    except OSError:
        return None
    try:
        if os.fstat(dup).st_ino != inode:
            return None
        with socket.socket(fileno=dup) as sock:
            dup = -1
            return use(sock)
    except OSError:
        return None
    finally:
        if dup >= 0:
            os.close(dup)


def _bytes_received(fd: int, inode: int) -> int | None:
    def read(sock: socket.socket) -> int | None:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_SIZE)
        if len(info) < TCP_INFO_BYTES_RECEIVED_OFFSET + 8:
            return None
        received: int = struct.unpack_from("=Q", info, TCP_INFO_BYTES_RECEIVED_OFFSET)[0]
        return received

    return _with_socket(fd, inode, read)


def _disconnect(fd: int, inode: int) -> bool:
    """Shut the connection down (ZeroMQ sees it end and forgets the subscriber); True when done."""

    def shut(sock: socket.socket) -> int:
        sock.shutdown(socket.SHUT_RDWR)
        return 1

    return _with_socket(fd, inode, shut) == 1


def release_free_memory() -> None:
    """Give memory freed by ZeroMQ (a dropped subscriber's subscriptions) back to the OS (glibc only)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return
    trim = getattr(ctypes.CDLL(name), "malloc_trim", None)
    if trim is not None:
        trim(0)

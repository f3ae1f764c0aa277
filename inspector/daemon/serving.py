"""A bound ZeroMQ socket served by a thread of its own until stopped (the trigger and control sockets).

Every message is read whole (all its frames) before it is handled, so no message can leave the socket in a
state it cannot serve the next one from; each message's failure is caught and logged as one line. A thread
that dies anyway (a bug outside the per-message guard) reports its death at once (the daemon reads
``degraded`` with the reason) and the line control's supervisor restarts it on a fresh socket.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

import structlog
import zmq

from inspector.bus.curve import CurveServer, apply_server
from inspector.core.inputs import clip

POLL_INTERVAL_MS = 100  # longest wait before re-checking the stop event
MAX_FRAME_BYTES = 1 << 20  # a larger frame is not read: ZeroMQ drops the connection (ZMQ_MAXMSGSIZE)
THREAD_JOIN_TIMEOUT_S = 5.0
DEATH_FAULT_ENV = "FAULT_INJECT_SOCKET_DEATH"  # "NAME:AFTER": for the hostile-input tests only

Context = zmq.Context[zmq.Socket[bytes]]
DeathCallback = Callable[[str, str], None]


class InjectedDeath(RuntimeError):
    """Raised by the fault-injection hook outside the per-message guard (a handler thread's bug)."""


def death_after(env: Mapping[str, str], name: str) -> int | None:
    """Messages after which the ``name`` socket's thread dies, from ``FAULT_INJECT_SOCKET_DEATH=NAME:AFTER``.

    Never set in production: ``pytest -m hostile`` uses it to prove that a dead handler thread degrades the
    daemon and is restarted.

    Raises:
        ValueError: the variable is set but not ``NAME:AFTER``.
    """
    raw = env.get(DEATH_FAULT_ENV, "")
    if not raw:
        return None
    target, _, after = raw.partition(":")
    if not after.isdigit():
        raise ValueError(f"{DEATH_FAULT_ENV}={raw!r}: expected NAME:AFTER, e.g. control:1")
    return int(after) if target == name else None


class SocketServer:
    """Binds one socket, then calls :meth:`serve_message` for each message that arrives, from its own thread.

    :attr:`death` says why the thread died (None while it runs or after a clean stop); :meth:`restart`
    serves the endpoint again from a new socket and thread.
    """

    kind: int = zmq.PULL
    name = "socket"

    def __init__(
        self,
        endpoint: str,
        context: Context,
        curve: CurveServer | None = None,
        on_death: DeathCallback | None = None,
        die_after: int | None = None,
    ) -> None:
        """Prepare (nothing is bound yet); with ``curve`` the socket is a CURVE server (ZAP-checked).

        Args:
            endpoint: where to bind.
            context: the daemon's ZeroMQ context.
            curve: the daemon's CURVE identity, or None.
            on_death: called with (name, reason) from the dying thread.
            die_after: fault injection: the thread dies once after this many messages.
        """
        self._endpoint = endpoint
        self._context = context
        self._curve = curve
        self._on_death = on_death
        self._die_after = die_after
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._socket: zmq.Socket[bytes] | None = None
        self._handled = 0
        self.endpoint = ""
        self.death: str | None = None
        self._log = structlog.stdlib.get_logger(__name__).bind(socket=self.name)

    def configure(self, sock: zmq.Socket[bytes]) -> None:
        """Set socket options before the bind (a subclass adds its own)."""
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
        apply_server(sock, self._curve)

    def start(self) -> str:
        """Bind the socket and start serving; returns the endpoint bound.

        Raises:
            zmq.ZMQError: the endpoint cannot be bound (the caller names the config field).
        """
        sock = self._context.socket(self.kind)
        self.configure(sock)
        try:
            sock.bind(self.endpoint or self._endpoint)
        except zmq.ZMQError:
            sock.close(linger=0)
            raise
        last = sock.getsockopt(zmq.LAST_ENDPOINT)
        self.endpoint = last.decode("utf-8") if isinstance(last, bytes) else str(last)
        self._socket = sock
        self.death = None
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(sock,), name=self.name, daemon=True)
        self._thread.start()
        return self.endpoint

    @property
    def alive(self) -> bool:
        """True while the serving thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def restart(self) -> str:
        """Close the socket of a dead thread and serve the same endpoint from a new socket and thread.

        Raises:
            zmq.ZMQError: the endpoint cannot be bound again yet (the supervisor tries again later).
        """
        self._close_socket()
        return self.start()

    def _run(self, sock: zmq.Socket[bytes]) -> None:
        try:
            while not self._stop.is_set():
                if sock.poll(POLL_INTERVAL_MS):
                    self._serve_guarded(sock)
                    self._inject_death()
        except Exception as exc:  # noqa: BLE001 - reported: the daemon degrades and the supervisor restarts it
            self.death = clip(f"{type(exc).__name__}: {exc}")
            self._log.critical("socket_server_died", error=self.death, exc_info=True)
            if self._on_death is not None:
                self._on_death(self.name, self.death)

    def _inject_death(self) -> None:
        self._handled += 1
        if self._die_after is not None and self._handled >= self._die_after:
            self._die_after = None
            raise InjectedDeath(
                f"{DEATH_FAULT_ENV}: the {self.name} thread dies after {self._handled} messages"
            )

    def _serve_guarded(self, sock: zmq.Socket[bytes]) -> None:
        """Read one whole message and handle it; a failure is logged as one line, never raised."""
        first, frames = receive_whole(sock)
        try:
            self.serve_message(sock, first, frames)
        except Exception as exc:  # noqa: BLE001 - one message must never stop the socket
            self._log.error("socket_message_failed", frames=frames, error=clip(repr(exc)))
            self.recover(sock, exc)

    def serve_message(self, sock: zmq.Socket[bytes], first: bytes, frames: int) -> None:
        """Handle one message: its first frame and how many frames it had (``frames > 1``: refuse it)."""
        raise NotImplementedError

    def recover(self, sock: zmq.Socket[bytes], exc: Exception) -> None:
        """Bring the socket back to a state that serves the next message after :meth:`serve_message` failed."""

    def _close_socket(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(THREAD_JOIN_TIMEOUT_S)
        self._close_socket()


def receive_whole(sock: zmq.Socket[bytes]) -> tuple[bytes, int]:
    """The first frame of the next message and its frame count; the other frames are read and let go."""
    first = sock.recv()
    frames = 1
    while sock.getsockopt(zmq.RCVMORE):
        sock.recv()
        frames += 1
    return first, frames

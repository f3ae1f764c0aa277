"""A bound ZeroMQ socket served by a thread of its own until stopped (the trigger and control sockets)."""

from __future__ import annotations

import threading

import zmq

from inspector.bus.curve import CurveServer, apply_server

POLL_INTERVAL_MS = 100  # longest wait before re-checking the stop event

Context = zmq.Context[zmq.Socket[bytes]]


class SocketServer:
    """Binds one socket, then calls :meth:`serve_one` for each message that arrives, from its own thread."""

    kind: int = zmq.PULL
    name = "socket"

    def __init__(self, endpoint: str, context: Context, curve: CurveServer | None = None) -> None:
        """Prepare (nothing is bound yet); with ``curve`` the socket is a CURVE server (ZAP-checked)."""
        self._endpoint = endpoint
        self._context = context
        self._curve = curve
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._socket: zmq.Socket[bytes] | None = None
        self.endpoint = ""

    def configure(self, sock: zmq.Socket[bytes]) -> None:
        """Set socket options before the bind (a subclass adds its own)."""
        sock.setsockopt(zmq.LINGER, 0)
        apply_server(sock, self._curve)

    def start(self) -> str:
        """Bind the socket and start serving; returns the endpoint bound.

        Raises:
            zmq.ZMQError: the endpoint cannot be bound (the caller names the config field).
        """
        sock = self._context.socket(self.kind)
        self.configure(sock)
        try:
            sock.bind(self._endpoint)
        except zmq.ZMQError:
            sock.close(linger=0)
            raise
        last = sock.getsockopt(zmq.LAST_ENDPOINT)
        self.endpoint = last.decode("utf-8") if isinstance(last, bytes) else str(last)
        self._socket = sock
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self.endpoint

    def _run(self) -> None:
        assert self._socket is not None
        while not self._stop.is_set():
            if self._socket.poll(POLL_INTERVAL_MS):
                self.serve_one(self._socket)

    def serve_one(self, sock: zmq.Socket[bytes]) -> None:
        """Handle one message that is ready on the socket."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

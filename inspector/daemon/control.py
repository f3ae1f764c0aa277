"""The control socket: a ZeroMQ REP socket answering JSON requests with :class:`~inspector.daemon.commands.LineCommands`."""

from __future__ import annotations

import json

import structlog
import zmq

from inspector.bus.control import decode_json, error_answer
from inspector.bus.curve import CurveServer
from inspector.daemon.commands import LineCommands
from inspector.daemon.serving import Context, SocketServer


class ControlServer(SocketServer):
    """Serves control requests in its own thread; every request gets exactly one JSON answer."""

    kind = zmq.REP
    name = "control"

    def __init__(
        self, endpoint: str, context: Context, commands: LineCommands, curve: CurveServer | None = None
    ) -> None:
        """Prepare (nothing is bound yet)."""
        super().__init__(endpoint, context, curve)
        self._commands = commands
        self._log = structlog.stdlib.get_logger(__name__)

    def serve_one(self, sock: zmq.Socket[bytes]) -> None:
        """Receive one request and send its answer (REP: exactly one answer per request)."""
        request = sock.recv()
        sock.send(json.dumps(self.answer(request)).encode("utf-8"))

    def answer(self, request: bytes) -> dict[str, object]:
        """The answer to one raw request (a malformed one included)."""
        doc, problem = decode_json(request, "request")
        if problem:
            return error_answer(problem)
        try:
            answer = self._commands.handle(doc)
        except Exception as exc:  # noqa: BLE001 - a request must never leave the socket without an answer
            self._log.error("control_request_failed", error=repr(exc))
            return error_answer(f"internal error: {type(exc).__name__}: {exc}")
        if isinstance(doc, dict) and doc.get("cmd") != "status":
            self._log.info(
                "control_request", cmd=doc.get("cmd"), ok=answer.get("ok"), error=answer.get("error")
            )
        return answer

"""The control socket: a ZeroMQ REP socket answering JSON requests with :class:`~inspector.daemon.commands.LineCommands`."""

from __future__ import annotations

import json

import zmq

from inspector.bus.control import COMMANDS, decode_json, error_answer
from inspector.bus.curve import CurveServer
from inspector.core.inputs import clip, quote
from inspector.daemon.commands import LineCommands
from inspector.daemon.serving import Context, DeathCallback, SocketServer


class ControlServer(SocketServer):
    """Serves control requests in its own thread; every request gets exactly one JSON answer.

    A request is a message of one frame; one of several frames is answered with an error (REP answers the
    whole message once), so no message can leave the socket unable to answer the next one.
    """

    kind = zmq.REP
    name = "control"

    def __init__(
        self,
        endpoint: str,
        context: Context,
        commands: LineCommands,
        curve: CurveServer | None = None,
        on_death: DeathCallback | None = None,
        die_after: int | None = None,
    ) -> None:
        """Prepare (nothing is bound yet); see :class:`SocketServer` for ``on_death`` and ``die_after``."""
        super().__init__(endpoint, context, curve, on_death, die_after)
        self._commands = commands
        self._answered = True

    def serve_message(self, sock: zmq.Socket[bytes], first: bytes, frames: int) -> None:
        """Answer one request (REP: exactly one answer per request, whatever it held)."""
        self._answered = False
        if frames != 1:
            self._log.warning("control_request_refused", frames=frames)
            answer = error_answer(f"a request is a message of one frame, this one had {frames}")
        else:
            answer = self.answer(first)
        self._send(sock, answer)

    def recover(self, sock: zmq.Socket[bytes], exc: Exception) -> None:
        """A request that failed before its answer went out still gets one (the REP socket expects it)."""
        if not self._answered:
            self._send(sock, error_answer(clip(f"internal error: {type(exc).__name__}: {exc}")))

    def _send(self, sock: zmq.Socket[bytes], answer: dict[str, object]) -> None:
        body = json.dumps(answer, ensure_ascii=True).encode("ascii")
        self._answered = True
        sock.send(body)

    def answer(self, request: bytes) -> dict[str, object]:
        """The answer to one raw request (a malformed one included)."""
        doc, problem = decode_json(request, "request")
        if problem:
            return error_answer(problem)
        try:
            answer = self._commands.handle(doc)
        except Exception as exc:  # noqa: BLE001 - a request must never leave the socket without an answer
            self._log.error("control_request_failed", error=clip(repr(exc)))
            return error_answer(clip(f"internal error: {type(exc).__name__}: {exc}"))
        if isinstance(doc, dict) and doc.get("cmd") != "status":
            cmd = doc.get("cmd")
            self._log.info(
                "control_request",
                cmd=cmd if cmd in COMMANDS else quote(cmd),
                ok=answer.get("ok"),
                error=clip(str(answer.get("error"))) if answer.get("error") else None,
            )
        return answer

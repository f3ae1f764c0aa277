"""The trigger socket: a ZeroMQ PULL socket whose JSON messages become parts of external-trigger cameras."""

from __future__ import annotations

import zmq

from inspector.bus.control import decode_json, parse_trigger
from inspector.bus.curve import CurveServer
from inspector.daemon.parts import (
    REJECT_MALFORMED,
    REJECT_MULTIPART,
    PartSource,
    TriggerAck,
    TriggerRejected,
)
from inspector.daemon.serving import Context, DeathCallback, SocketServer


def submit_parsed(parts: PartSource, doc: object) -> TriggerAck:
    """Hand a decoded trigger object to the part source: a readable camera and part id always get a verdict
    (an ERROR one when another field is wrong).

    Raises:
        TriggerRejected: no usable camera or part id, or the camera cannot take the trigger.
    """
    parsed = parse_trigger(doc)
    if parsed.camera is None or parsed.part_id is None:
        parts.count_rejected(REJECT_MALFORMED)
        raise TriggerRejected(REJECT_MALFORMED, parsed.problem)
    return parts.submit(parsed.camera, parsed.part_id, parsed.product, parsed.at, parsed.problem)


class TriggerListener(SocketServer):
    """Receives triggers on a bound PULL socket in its own thread until stopped; never raises on bad input.

    A trigger is one message of one frame: a message of several frames is one refusal (``multipart``).
    """

    kind = zmq.PULL
    name = "triggers"

    def __init__(
        self,
        endpoint: str,
        rcvhwm: int,
        context: Context,
        parts: PartSource,
        curve: CurveServer | None = None,
        on_death: DeathCallback | None = None,
        die_after: int | None = None,
    ) -> None:
        """Prepare (nothing is bound yet); see :class:`SocketServer` for ``on_death`` and ``die_after``."""
        super().__init__(endpoint, context, curve, on_death, die_after)
        self._rcvhwm = rcvhwm
        self._parts = parts

    def configure(self, sock: zmq.Socket[bytes]) -> None:
        """Linger 0 and the configured receive high-water mark."""
        super().configure(sock)
        sock.setsockopt(zmq.RCVHWM, self._rcvhwm)

    def serve_message(self, sock: zmq.Socket[bytes], first: bytes, frames: int) -> None:
        """Handle one received trigger message."""
        self.handle(first, frames)

    def handle(self, data: bytes, frames: int = 1) -> None:
        """One received message: submitted, or counted and logged with the reason."""
        try:
            if frames != 1:
                self._parts.count_rejected(REJECT_MULTIPART)
                raise TriggerRejected(
                    REJECT_MULTIPART, f"a trigger is a message of one frame, this one had {frames}"
                )
            doc, problem = decode_json(data, "trigger")
            if problem:
                self._parts.count_rejected(REJECT_MALFORMED)
                raise TriggerRejected(REJECT_MALFORMED, problem)
            ack = submit_parsed(self._parts, doc)
        except TriggerRejected as exc:
            self._log.warning("trigger_rejected", reason=exc.reason, error=str(exc))
            return
        if ack.fault:
            self._log.warning(
                "trigger_faulty", camera=ack.camera, seq=ack.seq, part_id=ack.part_id, error=ack.fault
            )

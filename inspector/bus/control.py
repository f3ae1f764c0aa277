"""Line-control messages: triggers (PULL socket or control socket) and control requests and answers (REQ/REP).

A trigger is one JSON object ``{"camera": "line1", "part_id": "A-000123", "product": "flange_b", "at":
"2024-05-01T12:00:00.000Z"}``; ``product`` and ``at`` (RFC 3339, UTC or with an offset; default: when it
arrives) are optional. A control request is a JSON object with a ``cmd`` (``status``, ``trigger``, ``product``,
``reload``, ``pause``, ``resume``) and its arguments; every answer is a JSON object with ``ok`` and, when it is
false, an ``error`` saying why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import zmq

from inspector.bus.curve import CurveClient
from inspector.core.errors import InspectorError
from inspector.core.inputs import camera_name_problem, clip, part_id_problem, product_name_problem, quote

MAX_MESSAGE_BYTES = 64 * 1024
COMMANDS = ("status", "trigger", "product", "reload", "pause", "resume")
TRIGGER_FIELDS = frozenset({"camera", "part_id", "product", "at"})
UNKNOWN_FIELDS_NAMED = 3  # unknown fields named in the problem; the rest are counted

Context = zmq.Context[zmq.Socket[bytes]]


class ControlError(InspectorError):
    """A control request that got no answer (nobody listening, timeout) or an answer that is not JSON."""


@dataclass(frozen=True)
class ParsedTrigger:
    """What a trigger message says, as far as it could be read.

    ``camera`` and ``part_id`` are None when missing or unusable (then the trigger has no place in a sequence);
    ``problem`` names what else is wrong (then the part gets an ERROR verdict giving it).
    """

    camera: str | None
    part_id: str | None
    product: str | None
    at: float | None
    problem: str


def parse_time(text: str) -> float:
    """Unix time of an RFC 3339 timestamp with a zone (``Z`` or an offset).

    Raises:
        ValueError: not RFC 3339, or no time zone (the message quotes the text bounded).
    """
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"at {quote(text)} is not an RFC 3339 time") from None
    if parsed.tzinfo is None:
        raise ValueError(f"at {quote(text)} has no time zone (use Z for UTC)")
    return parsed.astimezone(UTC).timestamp()


def _text(doc: dict[str, Any], key: str) -> str | None:
    value = doc.get(key)
    return value if isinstance(value, str) and value else None


def _unknown_fields(doc: dict[str, Any]) -> list[str]:
    unknown = sorted(set(doc) - TRIGGER_FIELDS)
    if not unknown:
        return []
    named = ", ".join(quote(key) for key in unknown[:UNKNOWN_FIELDS_NAMED])
    more = f" and {len(unknown) - UNKNOWN_FIELDS_NAMED} more" if len(unknown) > UNKNOWN_FIELDS_NAMED else ""
    return [f"unknown field{'s' if len(unknown) > 1 else ''} {named}{more}"]


def parse_trigger(doc: object) -> ParsedTrigger:
    """Read a decoded trigger object, keeping the camera and part id even when another field is wrong.

    Every field is checked at the door (``inspector.core.inputs``): a camera that is not a camera name and a
    part id that breaks the part-id rule leave the trigger without a place in a sequence; a product that is
    not a product name, an unreadable ``at`` or an unknown field make its verdict an ERROR. The problem text
    quotes what was sent bounded, never whole.
    """
    if not isinstance(doc, dict):
        return ParsedTrigger(None, None, None, None, "a trigger must be a JSON object")
    camera, part_id, product = _text(doc, "camera"), doc.get("part_id"), _text(doc, "product")
    problems = _unknown_fields(doc)
    camera_problem = camera_name_problem(doc.get("camera"))
    if camera_problem:
        problems.append(camera_problem)
        camera = None
    id_problem = part_id_problem(part_id)
    if id_problem:
        problems.append(id_problem)
    if "product" in doc and doc["product"] is not None:
        name_problem = product_name_problem(doc["product"])
        if name_problem:
            problems.append(name_problem)
            product = None
    at: float | None = None
    if doc.get("at") is not None:
        try:
            at = parse_time(doc["at"]) if isinstance(doc["at"], str) else None
            if at is None:
                problems.append("at must be an RFC 3339 string")
        except (ValueError, OverflowError, OSError) as exc:
            problems.append(str(exc))
    return ParsedTrigger(
        camera,
        part_id if id_problem is None and isinstance(part_id, str) else None,
        product,
        at,
        clip("; ".join(problems)),
    )


def decode_json(data: bytes, what: str) -> tuple[object, str]:
    """(decoded object, "") or (None, why not) for a message of at most MAX_MESSAGE_BYTES."""
    if len(data) > MAX_MESSAGE_BYTES:
        return None, f"{what} of {len(data)} bytes is longer than {MAX_MESSAGE_BYTES}"
    try:
        return json.loads(data.decode("utf-8")), ""
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError, JSONDecodeError, too many digits
        return None, clip(f"{what} is not JSON: {exc}")


def error_answer(reason: str) -> dict[str, Any]:
    """The answer to a request that failed."""
    return {"ok": False, "error": reason}


def request(
    context: Context,
    endpoint: str,
    payload: dict[str, Any],
    timeout_s: float,
    curve: CurveClient | None = None,
) -> dict[str, Any]:
    """Send one control request and wait for its answer (a fresh REQ socket, so a lost answer cannot wedge it).

    With ``curve`` the socket is a CURVE client; a daemon that does not accept its key never answers.

    Raises:
        ControlError: no answer within ``timeout_s``, or an answer that is not a JSON object.
    """
    sock = context.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    if curve is not None:
        curve.apply(sock)
    try:
        sock.connect(endpoint)
        sock.send(json.dumps(payload).encode("utf-8"))
        if not sock.poll(int(timeout_s * 1000)):
            raise ControlError(
                f"no answer from {endpoint} within {timeout_s:g} s (is the control socket on?)"
            )
        answer, problem = decode_json(sock.recv(), "answer")
    except zmq.ZMQError as exc:
        raise ControlError(f"control socket {endpoint}: {exc}") from exc
    finally:
        sock.close(linger=0)
    if not isinstance(answer, dict):
        raise ControlError(f"answer from {endpoint}: {problem or 'not a JSON object'}")
    return answer

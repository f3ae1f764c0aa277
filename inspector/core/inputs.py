"""Text that comes from outside (part ids, names in triggers and requests): what is accepted, how it is quoted.

A value that anyone on the network can send is checked at the door and quoted bounded wherever it is echoed
(an error answer, a verdict's ``error``, a log line), so a 64 KiB name costs a line, never 64 KiB of log.
"""

from __future__ import annotations

import re

from inspector.core.names import CAMERA_NAME_PATTERN, PART_ID_MAX_CHARS, PRODUCT_NAME_PATTERN

QUOTE_MAX_CHARS = 64
"""The longest piece of a value from outside that an error message or a log line repeats."""
PROBLEM_MAX_CHARS = 400
"""The longest description of what is wrong with one message (several problems joined)."""

_CAMERA_NAME = re.compile(CAMERA_NAME_PATTERN)
_PRODUCT_NAME = re.compile(PRODUCT_NAME_PATTERN)


def quote(value: object, max_chars: int = QUOTE_MAX_CHARS) -> str:
    """``repr`` of a value from outside, cut to ``max_chars`` characters, saying how long it was.

    Lone surrogates and control characters come out escaped (``repr``), so the result is always printable
    and encodable as UTF-8.
    """
    if isinstance(value, str) and len(value) > max_chars:
        return f"{value[:max_chars]!r}... ({len(value)} characters)"
    text = repr(value)
    if len(text) > max_chars + 2:
        return f"{text[:max_chars]}... ({len(text)} characters)"
    return text


def clip(text: str, max_chars: int = PROBLEM_MAX_CHARS) -> str:
    """A message cut to ``max_chars`` characters (with an ellipsis), for answers, verdict errors and logs."""
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


def part_id_problem(value: object) -> str | None:
    """Why a trigger's ``part_id`` is not usable, or None when it is.

    The rule (docs/integration.md, section 6): a string of 1 to ``PART_ID_MAX_CHARS`` printable characters:
    letters, digits, punctuation, symbols and the space of any script; no control characters (tab, newline,
    the GS separator of GS1 codes: translate them first), no lone surrogates (JSON ``\\ud800``), nothing that
    cannot be written as UTF-8.
    """
    rule = f"part_id must be a string of 1 to {PART_ID_MAX_CHARS} printable characters"
    if not isinstance(value, str) or not value:
        return rule
    if len(value) > PART_ID_MAX_CHARS:
        return f"{rule} (got {len(value)} characters)"
    if not value.isprintable():
        bad = next(c for c in value if not c.isprintable())
        return f"{rule}: {quote(value)} has the non-printable character {bad!a}"
    return None


def camera_name_problem(value: object) -> str | None:
    """Why ``value`` cannot be a camera name (``CAMERA_NAME_PATTERN``), or None."""
    if isinstance(value, str) and _CAMERA_NAME.match(value):
        return None
    return f"camera {quote(value)} is not a camera name (letters, digits, _ and -, at most 64)"


def product_name_problem(value: object) -> str | None:
    """Why ``value`` cannot be a product name (``PRODUCT_NAME_PATTERN``), or None."""
    if isinstance(value, str) and _PRODUCT_NAME.match(value):
        return None
    return f"product {quote(value)} is not a product name (letters, digits, _, . and -, at most 64)"

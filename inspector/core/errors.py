"""The one formatter of pydantic validation errors: one ``field.path: message`` line per problem."""

from __future__ import annotations

from pydantic import ValidationError

VALUE_ERROR_PREFIX = (
    "Value error, "  # pydantic's prefix for a validator's own message: the message says enough
)


def validation_lines(err: ValidationError, prefix: str = "") -> list[str]:
    """Lines like ``cameras.1.fps: Input should be greater than 0``, one per error.

    Args:
        err: the validation error.
        prefix: prepended to every location (e.g. ``"manifest field "``).
    """
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(root)"
        lines.append(f"{prefix}{loc}: {e['msg'].removeprefix(VALUE_ERROR_PREFIX)}")
    return lines


class InspectorError(Exception):
    """Base of the errors a command reports as one line naming the file, field or camera (exit status 1)."""

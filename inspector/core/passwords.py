"""Password hashes for the users files (OPC UA, the review page): PBKDF2-HMAC-SHA256, checked in constant time."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import tomllib
from pathlib import Path

from inspector.core.errors import InspectorError

HASH_SCHEME = "pbkdf2_sha256"
HASH_ITERATIONS = 600_000  # OWASP's 2023 figure for PBKDF2-HMAC-SHA256
SALT_BYTES = 16
MIN_PASSWORD_CHARS = 8


class UsersError(InspectorError):
    """A users file or certificate that cannot be used; the message names the file and the line."""


def hash_password(password: str, iterations: int = HASH_ITERATIONS) -> str:
    """``pbkdf2_sha256$<iterations>$<salt>$<hash>`` (base64) of a password, for a users file.

    Raises:
        UsersError: a password shorter than MIN_PASSWORD_CHARS.
    """
    if len(password) < MIN_PASSWORD_CHARS:
        raise UsersError(f"a password needs at least {MIN_PASSWORD_CHARS} characters")
    salt = os.urandom(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return "$".join((HASH_SCHEME, str(iterations), _b64(salt), _b64(digest)))


def check_password(password: str, stored: str) -> bool:
    """True when ``password`` matches a hash from :func:`hash_password` (constant-time comparison)."""
    try:
        scheme, iterations, salt, digest = stored.split("$")
        if scheme != HASH_SCHEME:
            return False
        got = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), _unb64(salt), int(iterations))
    except ValueError:
        return False
    return hmac.compare_digest(got, _unb64(digest))


def dummy_hash(users: dict[str, str]) -> str:
    """A hash of a random password with the largest work among ``users``: an unknown user is checked against it,
    so that its answer takes as long as a known user's wrong password."""
    iterations = max((iterations_of(h) for h in users.values()), default=HASH_ITERATIONS)
    return hash_password(os.urandom(SALT_BYTES).hex(), iterations)


def iterations_of(stored: str) -> int:
    """The PBKDF2 iterations a stored hash says (the default for one it cannot read)."""
    try:
        return int(stored.split("$")[1])
    except (IndexError, ValueError):
        return HASH_ITERATIONS


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def read_users_table(path: Path, field: str, table: str = "users") -> dict[str, object]:
    """A table of a TOML users file (``[users]`` by default), checked to be one.

    Raises:
        UsersError: the file is missing, not TOML, or has no such table (naming ``field`` and the file).
    """
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsersError(f"{field} {path}: {exc}") from None
    found = doc.get(table)
    if not isinstance(found, dict):
        raise UsersError(f"{field} {path}: no [{table}] table")
    return found


def read_users(path: Path, field: str) -> dict[str, str]:
    """The ``[users]`` table of a TOML file: user name -> password hash.

    Raises:
        UsersError: the file is missing, not TOML, or a value is not a hash (the user is named, never the hash).
    """
    users = read_users_table(path, field)
    for name, stored in users.items():
        if not isinstance(stored, str) or not stored.startswith(HASH_SCHEME + "$"):
            raise UsersError(f"{field} {path}: user {name!r} has no {HASH_SCHEME} hash")
    return {name: str(stored) for name, stored in users.items()}

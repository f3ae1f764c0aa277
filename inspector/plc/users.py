"""Who may open an OPC UA session: users from a file of password hashes, trusted client certificates."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import tomllib
from pathlib import Path
from typing import Any

from asyncua.crypto import uacrypto
from asyncua.crypto.permission_rules import User, UserRole

from inspector.core.errors import InspectorError

HASH_SCHEME = "pbkdf2_sha256"
HASH_ITERATIONS = 600_000  # OWASP's 2023 figure for PBKDF2-HMAC-SHA256
SALT_BYTES = 16
MIN_PASSWORD_CHARS = 8


class UsersError(InspectorError):
    """A users file or certificate that cannot be used; the message names the file and the line."""


def hash_password(password: str, iterations: int = HASH_ITERATIONS) -> str:
    """``pbkdf2_sha256$<iterations>$<salt>$<hash>`` (base64) of a password, for the users file.

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


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def read_users(path: Path) -> dict[str, str]:
    """The ``[users]`` table of a TOML file: user name -> password hash.

    Raises:
        UsersError: the file is missing, not TOML, or a value is not a hash (the user is named, never the hash).
    """
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsersError(f"opcua.users_file {path}: {exc}") from None
    users = doc.get("users")
    if not isinstance(users, dict):
        raise UsersError(f"opcua.users_file {path}: no [users] table")
    for name, stored in users.items():
        if not isinstance(stored, str) or not stored.startswith(HASH_SCHEME + "$"):
            raise UsersError(f"opcua.users_file {path}: user {name!r} has no {HASH_SCHEME} hash")
    return dict(users)


class AccessManager:
    """asyncua's user manager: a known user with the right password, or a trusted client certificate."""

    def __init__(self, users: dict[str, str], certificates: list[bytes], allow_anonymous: bool) -> None:
        """Users (name -> hash), trusted client certificates (DER), and whether anonymous sessions are allowed."""
        self._users = users
        self._certificates = certificates
        self._anonymous = allow_anonymous

    @classmethod
    async def load(
        cls, users_file: Path | None, certificates: list[Path], allow_anonymous: bool
    ) -> AccessManager:
        """Read the users file and the certificate files.

        Raises:
            UsersError: a file that cannot be read.
        """
        users = read_users(users_file) if users_file is not None else {}
        ders = []
        for path in certificates:
            try:
                ders.append(uacrypto.der_from_x509(await uacrypto.load_certificate(path)))  # type: ignore[no-untyped-call]
            except (OSError, ValueError) as exc:
                raise UsersError(f"opcua.client_certificates {path}: {exc}") from None
        return cls(users, ders, allow_anonymous)

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:  # fmt: skip
        """The session's user, or None (refused)."""
        if username is not None:
            stored = self._users.get(username)
            ok = stored is not None and password is not None and check_password(password, stored)
            return User(role=UserRole.User, name=username) if ok else None
        if certificate:  # the X509 token's certificate, or the secure channel's (asyncua passes either)
            der = certificate if isinstance(certificate, bytes) else uacrypto.der_from_x509(certificate)  # type: ignore[no-untyped-call]
            return User(role=UserRole.User, name="certificate") if der in self._certificates else None
        return User(role=UserRole.User, name="anonymous") if self._anonymous else None

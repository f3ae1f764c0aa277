"""CURVE keys of the daemon's sockets: key files (ZeroMQ certificate format), and a ZAP handler on a context."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import zmq
from zmq.utils import z85

from inspector.core.keyfiles import KeyFileError, read_key_file, write_key_file

PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"
Z85_KEY_CHARS = 40
RAW_KEY_BYTES = 32
_KEY_LINE = re.compile(r'^\s*(public|secret)-key\s*=\s*"([^"]*)"\s*$', re.MULTILINE)
_PUBLIC_TEMPLATE = """#   ZeroMQ CURVE Public Certificate (inspector keys generate --curve)
#   Give this file to the peers that must know this key.

metadata
curve
    public-key = "{public}"
"""
_SECRET_TEMPLATE = """#   ZeroMQ CURVE **Secret** Certificate (inspector keys generate --curve)
#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.

metadata
curve
    public-key = "{public}"
    secret-key = "{secret}"
"""


@dataclass(frozen=True)
class CurveKeyPair:
    """A CURVE key pair (Z85 text); ``repr`` never shows the secret."""

    public: bytes
    secret: bytes

    def __repr__(self) -> str:
        return f"CurveKeyPair(public={self.public.decode('ascii')!r}, secret=<hidden>)"


def generate_curve_keypair(prefix: Path) -> tuple[Path, Path, str]:
    """Write a new CURVE key pair: ``<prefix>.key`` (public) and ``<prefix>.key_secret`` (0600).

    The files are ZeroMQ certificates (what ``zmq.auth.load_certificate`` and czmq's ``zcert_load`` read).

    Returns:
        (secret file, public file, public key in Z85).

    Raises:
        KeyFileError: a file exists already or cannot be written.
    """
    secret_path = prefix.with_name(prefix.name + SECRET_SUFFIX)
    public_path = prefix.with_name(prefix.name + PUBLIC_SUFFIX)
    for path in (secret_path, public_path):
        if path.exists():
            raise KeyFileError(path, "exists already (keys are never overwritten; remove it first)")
    public, secret = zmq.curve_keypair()
    text = {"public": public.decode("ascii"), "secret": secret.decode("ascii")}
    write_key_file(secret_path, _SECRET_TEMPLATE.format(**text).encode("ascii"), secret=True)
    write_key_file(public_path, _PUBLIC_TEMPLATE.format(**text).encode("ascii"), secret=False)
    return secret_path, public_path, text["public"]


def _keys(path: Path, secret: bool) -> dict[str, bytes]:
    try:
        text = read_key_file(path, secret=secret).decode("ascii")
    except UnicodeDecodeError:
        raise KeyFileError(path, "not a ZeroMQ CURVE certificate (not ASCII text)") from None
    found: dict[str, bytes] = {}
    for kind, value in _KEY_LINE.findall(text):
        if len(value) != Z85_KEY_CHARS or len(_z85_decode(value)) != RAW_KEY_BYTES:
            raise KeyFileError(path, f"{kind}-key is not a {Z85_KEY_CHARS}-character Z85 CURVE key")
        found[kind] = value.encode("ascii")
    return found


def _z85_decode(value: str) -> bytes:
    try:
        return bytes(z85.decode(value))
    except (ValueError, KeyError, IndexError):
        return b""


def load_public_key(path: Path) -> bytes:
    """The public key (Z85) of a certificate file, public or secret.

    Raises:
        KeyFileError: unreadable, or no valid ``public-key`` line.
    """
    keys = _keys(path, secret=False)
    if "public" not in keys:
        raise KeyFileError(path, "no public-key line (make one with `inspector keys generate --curve`)")
    return keys["public"]


def load_keypair(path: Path) -> CurveKeyPair:
    """A key pair from a secret certificate file (``.key_secret``), which must be private to its owner.

    Raises:
        KeyFileError: unreadable, readable by others, or missing a key; the message never shows the key.
    """
    keys = _keys(path, secret=True)
    if "secret" not in keys or "public" not in keys:
        raise KeyFileError(path, "not a secret CURVE certificate (needs public-key and secret-key lines)")
    if zmq.curve_public(keys["secret"]) != keys["public"]:
        raise KeyFileError(path, "its public-key does not belong to its secret-key")
    return CurveKeyPair(keys["public"], keys["secret"])

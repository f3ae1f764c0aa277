"""CURVE keys of the daemon's sockets: key files (ZeroMQ certificate format), and a ZAP handler on a context."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import structlog
import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from inspector.core.keyfiles import KeyFileError, read_key_file, write_key_file

ZAP_DOMAIN = "inspector"
AUTH_LOGGER = "inspector.bus.zap"
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


@dataclass(frozen=True)
class CurveServer:
    """The daemon's CURVE identity and the client public keys it lets in (Z85)."""

    keys: CurveKeyPair
    allowed: frozenset[bytes]


def load_curve_server(secret_key_file: Path | None, allowed_client_keys: list[Path]) -> CurveServer | None:
    """The server identity of ``[security]``; None when CURVE is off (no server key file).

    Raises:
        KeyFileError: a key file cannot be used (named; never the key).
    """
    if secret_key_file is None:
        return None
    return CurveServer(
        load_keypair(secret_key_file), frozenset(load_public_key(p) for p in allowed_client_keys)
    )


def apply_server(sock: zmq.Socket[bytes], server: CurveServer | None) -> None:
    """Make a socket a CURVE server checked by the ZAP handler (before bind); nothing when CURVE is off."""
    if server is None:
        return
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_SECRETKEY, server.keys.secret)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, server.keys.public)
    sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode("ascii"))


def apply_client(sock: zmq.Socket[bytes], client: CurveKeyPair, server_public: bytes) -> None:
    """Make a socket a CURVE client of the server with this public key (before connect)."""
    sock.setsockopt(zmq.CURVE_SERVERKEY, server_public)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, client.public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, client.secret)


def client_setup(client_secret_file: Path | None, server_key_file: Path | None) -> CurveClient | None:
    """The client side from command-line options: both files, or neither (plain NULL mechanism).

    Raises:
        KeyFileError: one of the two given without the other, or a file cannot be used.
    """
    if client_secret_file is None and server_key_file is None:
        return None
    if client_secret_file is None or server_key_file is None:
        missing = "--curve-client-key" if client_secret_file is None else "--curve-server-key"
        given = client_secret_file or server_key_file
        raise KeyFileError(given or "", f"CURVE needs both keys: {missing} is missing")
    return CurveClient(load_keypair(client_secret_file), load_public_key(server_key_file))


@dataclass(frozen=True)
class CurveClient:
    """A client's key pair and the server public key it expects."""

    keys: CurveKeyPair
    server_public: bytes

    def apply(self, sock: zmq.Socket[bytes]) -> None:
        """Configure a socket before it connects."""
        apply_client(sock, self.keys, self.server_public)


class CurveAuthenticator:
    """The ZAP handler of a context: lets in only CURVE clients whose public key is allowed.

    A client with another key, a plaintext (NULL) client, or one expecting another server key completes no
    handshake: it receives nothing and nothing it sends is delivered. Refusals are logged with the client's
    public key (never a secret).
    """

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], server: CurveServer) -> None:
        """Prepare (nothing runs yet)."""
        self._server = server
        self._auth = ThreadAuthenticator(context, log=logging.getLogger(AUTH_LOGGER))
        self._log = structlog.stdlib.get_logger(__name__)
        self.refused = 0

    def callback(self, domain: str, client_key: bytes) -> bool:
        """ZAP decision for one handshake (called by the authenticator thread)."""
        allowed = domain == ZAP_DOMAIN and client_key in self._server.allowed
        if not allowed:
            self.refused += 1
            self._log.warning("curve_client_refused", domain=domain, client_key=client_key.decode("ascii"))
        return allowed

    def start(self) -> None:
        """Start the ZAP handler thread; call before binding the sockets."""
        self._auth.start()
        self._auth.configure_curve_callback(domain=ZAP_DOMAIN, credentials_provider=self)

    def stop(self) -> None:
        """Stop the handler thread."""
        self._auth.stop()

"""Key files on disk: read bounded, secrets refused when others can read them; errors name the file, never a key."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from inspector.core.errors import InspectorError

MAX_KEY_FILE_BYTES = 64 * 1024
SECRET_FILE_MODE = 0o600
PUBLIC_FILE_MODE = 0o644
OTHERS_MODE_BITS = 0o077  # group and other permission bits: none allowed on a secret key file


class KeyFileError(InspectorError):
    """A key file that cannot be used; the message names the file and the reason (never the key)."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"key file {path}: {reason}")


def key_path(path: Path | str) -> Path:
    """A configured key path with environment variables expanded.

    ``${CREDENTIALS_DIRECTORY}/curve-server`` then names a file systemd's ``LoadCredential=`` provides.
    """
    return Path(os.path.expandvars(str(path)))


def read_key_file(path: Path | str, secret: bool) -> bytes:
    """The bytes of a key file.

    Args:
        path: the file (environment variables expanded, see :func:`key_path`).
        secret: the file holds a secret key: refused if group or others may read or write it.

    Raises:
        KeyFileError: missing, not a regular file, too large, unreadable, or a secret others can read.
    """
    where = key_path(path)
    try:
        info = where.stat()
    except FileNotFoundError:
        raise KeyFileError(where, "file not found") from None
    except OSError as err:
        raise KeyFileError(where, f"cannot read file ({err.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise KeyFileError(where, "not a regular file")
    if info.st_size > MAX_KEY_FILE_BYTES:
        raise KeyFileError(where, f"{info.st_size} bytes, larger than any key file ({MAX_KEY_FILE_BYTES})")
    if secret and info.st_mode & OTHERS_MODE_BITS:
        mode = stat.S_IMODE(info.st_mode)
        raise KeyFileError(where, f"secret key readable by group or others (mode {mode:04o}); chmod 600 it")
    try:
        return where.read_bytes()
    except OSError as err:
        raise KeyFileError(where, f"cannot read file ({err.strerror})") from None


def write_key_file(path: Path, data: bytes, secret: bool) -> None:
    """Write a new key file atomically (0600 for a secret, 0644 for a public key); never replaces one.

    Raises:
        KeyFileError: the file exists already, or cannot be written.
    """
    path = Path(path)
    if path.exists():
        raise KeyFileError(path, "exists already (keys are never overwritten; remove it first)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise KeyFileError(path, f"cannot write file ({err.strerror})") from None
    try:
        os.fchmod(fd, SECRET_FILE_MODE if secret else PUBLIC_FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(tmp_name, path)  # fails if the file appeared meanwhile: never replaces a key
    except FileExistsError:
        raise KeyFileError(path, "exists already (keys are never overwritten; remove it first)") from None
    except OSError as err:
        raise KeyFileError(path, f"cannot write file ({err.strerror})") from None
    finally:
        Path(tmp_name).unlink(missing_ok=True)

"""Reading a safetensors file's header without trusting it: size, prefix, foreign formats, exact length."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from inspector.core.errors import InspectorError

HEADER_LEN_BYTES = 8
MAX_HEADER_BYTES = 100 * 1024 * 1024
PICKLE_PROTO_OPCODE = b"\x80"
PICKLE_PROTOCOLS = (b"\x02", b"\x03", b"\x04", b"\x05")
ZIP_MAGIC = b"PK\x03\x04"


class GalleryError(InspectorError):
    """A gallery file that cannot be saved or loaded; the message names the file and the reason."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"gallery {path}: {reason}")


def _foreign_format(prefix: bytes) -> str | None:
    """Name a format a misplaced file is likely in (pickle protocol >= 2, zip as written by torch.save)."""
    if prefix[:1] == PICKLE_PROTO_OPCODE and prefix[1:2] in PICKLE_PROTOCOLS:
        return "a pickle"
    return "a zip archive (torch.save)" if prefix.startswith(ZIP_MAGIC) else None


def _read_header_bytes(path: Path) -> tuple[int, bytes]:
    """File size and the raw JSON header; refuses missing, unreadable, truncated or implausible files."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            prefix = handle.read(HEADER_LEN_BYTES)
            header_len = struct.unpack("<Q", prefix)[0] if len(prefix) == HEADER_LEN_BYTES else -1
            raw = handle.read(header_len) if 0 <= header_len <= MAX_HEADER_BYTES else b""
    except FileNotFoundError:
        raise GalleryError(path, "file not found") from None
    except OSError as err:
        raise GalleryError(path, f"cannot read file ({err.strerror})") from None
    if header_len < 0:
        raise GalleryError(path, f"truncated file ({size} bytes, shorter than the safetensors prefix)")
    if (header_len > MAX_HEADER_BYTES or len(raw) < header_len) and (kind := _foreign_format(prefix)):
        raise GalleryError(path, f"not a safetensors file (looks like {kind}; galleries are never unpickled)")
    if header_len > MAX_HEADER_BYTES:
        raise GalleryError(path, f"not a safetensors file (header length {header_len} is implausible)")
    if len(raw) < header_len:
        raise GalleryError(path, f"truncated file (header needs {header_len} bytes, file has {size})")
    return size, raw


def read_header(path: Path) -> dict[str, Any]:
    """Parse the safetensors header and check the file size matches it exactly."""
    size, raw = _read_header_bytes(path)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise GalleryError(path, "not a safetensors file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise GalleryError(path, "not a safetensors file (header is not a JSON object)")
    data_end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise GalleryError(path, f"not a safetensors file (tensor {name!r} has no valid data_offsets)")
        data_end = max(data_end, offsets[1])
    expected = HEADER_LEN_BYTES + len(raw) + data_end
    if size < expected:
        raise GalleryError(path, f"truncated file ({size} bytes, header describes {expected})")
    if size > expected:
        raise GalleryError(path, f"file size {size} does not match header ({expected} bytes): trailing data")
    return header

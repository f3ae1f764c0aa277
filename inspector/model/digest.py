"""SHA-256 of files read in chunks (weights files, gallery sources) and of canonical JSON (gallery manifests)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

HASH_CHUNK_BYTES = 1024 * 1024
GALLERY_HASH_DOMAIN = b"inspector-gallery\0"


def file_sha256(path: Path, chunk_bytes: int = HASH_CHUNK_BYTES) -> str:
    """SHA-256 hex digest of a file, read in chunks of ``chunk_bytes``."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def canonical_json(document: Any) -> bytes:
    """UTF-8 JSON with sorted keys and no whitespace: one byte string per value (floats as Python's repr)."""
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def gallery_sha256(manifest: dict[str, Any]) -> str:
    """The gallery hash: SHA-256 of ``inspector-gallery`` NUL, then the manifest's canonical JSON.

    The manifest carries ``content_sha256`` (the tensors' hash), so this one value covers every byte that can
    change a verdict: tensors, calibration, SPADE parameters, preprocessing, stages and sources.
    """
    return hashlib.sha256(GALLERY_HASH_DOMAIN + canonical_json(manifest)).hexdigest()

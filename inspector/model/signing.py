"""Ed25519 gallery signatures: key pairs, detached ``<gallery>.sig`` files, verification by allowed signers."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from inspector.core.keyfiles import KeyFileError, read_key_file, write_key_file
from inspector.model.header import GalleryError

SIGNATURE_SUFFIX = ".sig"
SIGNATURE_FORMAT = "inspector-gallery-signature-v1"
SIGNED_DOMAIN = b"inspector-gallery-signature\0"  # the signed message: this, then the gallery hash (hex)
SECRET_SUFFIX = ".ed25519"
PUBLIC_SUFFIX = ".ed25519.pub"
FINGERPRINT_HEX_CHARS = 32
MAX_SIGNATURE_BYTES = 4096


class SignatureError(GalleryError):
    """A gallery refused for its signature: missing, unreadable, for other content, by an unknown key, invalid."""


@dataclass(frozen=True)
class Signer:
    """An allowed signer: its public key, its fingerprint and the file it came from."""

    fingerprint: str
    key: Ed25519PublicKey
    path: Path


def fingerprint(key: Ed25519PublicKey) -> str:
    """``ed25519:`` and the first 32 hex digits of the SHA-256 of the raw public key: what logs and status show."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:FINGERPRINT_HEX_CHARS]


def signature_path(gallery: Path) -> Path:
    """The detached signature file of a gallery: its name with ``.sig`` appended."""
    return gallery.with_name(gallery.name + SIGNATURE_SUFFIX)


def generate_keypair(prefix: Path) -> tuple[Path, Path, str]:
    """Write a new Ed25519 key pair: ``<prefix>.ed25519`` (secret, PKCS#8 PEM, 0600) and ``.ed25519.pub``.

    Returns:
        (secret file, public file, fingerprint).

    Raises:
        KeyFileError: a file exists already or cannot be written.
    """
    secret_path = prefix.with_name(prefix.name + SECRET_SUFFIX)
    public_path = prefix.with_name(prefix.name + PUBLIC_SUFFIX)
    for path in (secret_path, public_path):
        if path.exists():
            raise KeyFileError(path, "exists already (keys are never overwritten; remove it first)")
    key = Ed25519PrivateKey.generate()
    secret = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    write_key_file(secret_path, secret, secret=True)
    write_key_file(public_path, public, secret=False)
    return secret_path, public_path, fingerprint(key.public_key())


def load_signer(path: Path) -> Signer:
    """An allowed signer from its public key file (PEM).

    Raises:
        KeyFileError: unreadable, or not an Ed25519 public key.
    """
    data = read_key_file(path, secret=False)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFileError(path, "not a PEM public key (make one with `inspector keys generate`)") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(path, f"not an Ed25519 public key ({type(key).__name__})")
    return Signer(fingerprint(key), key, Path(path))


def load_signers(paths: Sequence[Path]) -> list[Signer]:
    """Every allowed signer of ``[security] gallery_signers``.

    Raises:
        KeyFileError: a file cannot be used (named).
    """
    return [load_signer(p) for p in paths]


def _load_secret(path: Path) -> Ed25519PrivateKey:
    data = read_key_file(path, secret=True)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise KeyFileError(path, "not an unencrypted PEM secret key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(path, f"not an Ed25519 secret key ({type(key).__name__})")
    return key


def sign_gallery(gallery: Path, gallery_sha256: str, secret_key: Path) -> tuple[Path, str]:
    """Write the detached signature of a gallery (replacing an older one).

    Args:
        gallery: the gallery file (already validated by the caller).
        gallery_sha256: its gallery hash, the signed value.
        secret_key: the signer's secret key file.

    Returns:
        (signature file, signer fingerprint).

    Raises:
        KeyFileError: the secret key cannot be used.
    """
    key = _load_secret(secret_key)
    signer = fingerprint(key.public_key())
    signature = key.sign(SIGNED_DOMAIN + gallery_sha256.encode("ascii"))
    document = {
        "format": SIGNATURE_FORMAT,
        "gallery_sha256": gallery_sha256,
        "key": signer,
        "signature": base64.b64encode(signature).decode("ascii"),
    }
    path = signature_path(gallery)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)  # the old signature, or the new one: never half a file
    finally:
        tmp.unlink(missing_ok=True)
    return path, signer


def _read_signature(gallery: Path) -> dict[str, str]:
    path = signature_path(gallery)
    try:
        data = path.read_bytes()[: MAX_SIGNATURE_BYTES + 1]
    except FileNotFoundError:
        raise SignatureError(
            gallery,
            f"unsigned: no signature file {path.name} (sign with `inspector gallery sign --key SECRET`)",
        ) from None
    except OSError as err:
        raise SignatureError(gallery, f"cannot read signature file {path.name} ({err.strerror})") from None
    try:
        document = json.loads(data) if len(data) <= MAX_SIGNATURE_BYTES else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        document = None
    fields = ("format", "gallery_sha256", "key", "signature")
    if not (isinstance(document, dict) and all(isinstance(document.get(f), str) for f in fields)):
        raise SignatureError(gallery, f"signature file {path.name} is not a {SIGNATURE_FORMAT} document")
    if document["format"] != SIGNATURE_FORMAT:
        raise SignatureError(gallery, f"signature file {path.name}: unknown format {document['format']!r}")
    return {f: document[f] for f in fields}


def verify_gallery(gallery: Path, gallery_sha256: str, signers: Sequence[Signer]) -> Signer:
    """The allowed signer whose valid signature covers this gallery hash.

    Raises:
        SignatureError: no signature file, a signature of other content (the gallery was changed after
            signing), a key not among ``signers``, or a signature that does not verify.
    """
    document = _read_signature(gallery)
    if document["gallery_sha256"] != gallery_sha256:
        raise SignatureError(
            gallery,
            f"signature is for gallery {document['gallery_sha256'][:12]}, the file is {gallery_sha256[:12]} "
            "(changed after signing)",
        )
    allowed = {s.fingerprint: s for s in signers}
    signer = allowed.get(document["key"])
    if signer is None:
        raise SignatureError(
            gallery, f"signed by {document['key']}, not an allowed signer ({', '.join(allowed) or 'none'})"
        )
    try:
        signature = base64.b64decode(document["signature"], validate=True)
        signer.key.verify(signature, SIGNED_DOMAIN + gallery_sha256.encode("ascii"))
    except (binascii.Error, InvalidSignature):
        raise SignatureError(gallery, f"invalid signature (claimed signer {signer.fingerprint})") from None
    return signer

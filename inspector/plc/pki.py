"""The PKI folder: which client certificates may open a secure channel (trusted/, issuers/, CRLs, rejected/).

The layout is the one other OPC UA servers (UA .NET, node-opcua, open62541) use, so an engineer finds their
way in it::

    <pki_dir>/trusted/certs    client certificates, or the CAs that signed them, trusted for a secure channel
    <pki_dir>/trusted/crl      revocation lists of the trusted CAs
    <pki_dir>/issuers/certs    CAs that complete a chain but are not trusted by themselves
    <pki_dir>/issuers/crl      their revocation lists
    <pki_dir>/rejected         certificates refused as untrusted, copied here: move one to trusted/certs
                               (``inspector opcua trust FILE``) to accept it

A certificate is trusted when it is in ``trusted/certs`` itself, or chains (through ``issuers/certs`` and the
chain the client sent) to a CA in ``trusted/certs``; then it, and each CA on the way, must be within its
validity period and not revoked by a revocation list its issuer signed. The folders are re-read when they
change, so a certificate moved into ``trusted/certs`` works from the next connection on.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog
from asyncua import ua
from asyncua.ua.status_codes import StatusCodes
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding

from inspector.core.errors import InspectorError

CERT_SUFFIXES = (".der", ".pem", ".crt", ".cer")
CRL_SUFFIXES = (".der", ".pem", ".crl")
MAX_CHAIN_DEPTH = 8  # CAs between a client certificate and a trusted one, at most
MAX_REJECTED_FILES = 128  # rejected/ never grows beyond this many files (a client spraying certificates)
MAX_FILE_BYTES = 1 << 20  # a certificate or CRL file larger than this is not read
FOLDER_MODE = 0o750
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")


class PkiError(InspectorError):
    """A certificate file that cannot be read or placed; the message names the file."""


@dataclass(frozen=True)
class Refusal:
    """Why a client certificate may not open a secure channel: an OPC UA status code and a sentence."""

    code: int
    reason: str

    @property
    def name(self) -> str:
        """The status code's name (``BadCertificateUntrusted``, ...)."""
        return str(ua.StatusCode(ua.UInt32(self.code)).name)


@dataclass(frozen=True)
class PkiFolders:
    """The sub-folders of one PKI folder."""

    root: Path

    @property
    def trusted(self) -> Path:
        """Trusted certificates and CAs."""
        return self.root / "trusted" / "certs"

    @property
    def trusted_crl(self) -> Path:
        """Revocation lists of the trusted CAs."""
        return self.root / "trusted" / "crl"

    @property
    def issuers(self) -> Path:
        """CAs that only complete chains."""
        return self.root / "issuers" / "certs"

    @property
    def issuers_crl(self) -> Path:
        """Revocation lists of the issuer CAs."""
        return self.root / "issuers" / "crl"

    @property
    def rejected(self) -> Path:
        """Certificates refused as untrusted."""
        return self.root / "rejected"

    def all(self) -> tuple[Path, ...]:
        """Every sub-folder."""
        return (self.trusted, self.trusted_crl, self.issuers, self.issuers_crl, self.rejected)

    def create(self) -> None:
        """Create the missing sub-folders.

        Raises:
            PkiError: a folder that cannot be created (the path is named).
        """
        for folder in self.all():
            try:
                folder.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
            except OSError as exc:
                raise PkiError(f"opcua.pki_dir {folder}: {exc}") from None


def read_certificate(path: Path) -> x509.Certificate:
    """A certificate file, DER or PEM.

    Raises:
        PkiError: the file cannot be read or holds no certificate (the path is named).
    """
    data = _read(path)
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise PkiError(f"{path}: not a DER or PEM certificate ({exc})") from None


def _read(path: Path) -> bytes:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise PkiError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
        return path.read_bytes()
    except OSError as exc:
        raise PkiError(f"{path}: {exc}") from None


def _read_crl(path: Path) -> x509.CertificateRevocationList:
    data = _read(path)
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise PkiError(f"{path}: not a DER or PEM revocation list ({exc})") from None


def split_der_chain(data: bytes) -> list[bytes]:
    """The DER certificates of a SenderCertificate (a leaf, optionally followed by its CAs)."""
    out, pos = [], 0
    while pos < len(data):
        end = _der_end(data, pos)
        if end is None:
            break
        out.append(data[pos:end])
        pos = end
    return out or [data]


def _der_end(data: bytes, pos: int) -> int | None:
    if pos + 2 > len(data) or data[pos] != 0x30:
        return None
    first = data[pos + 1]
    if first < 0x80:
        length, header = first, 2
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + 2 + count > len(data):
            return None
        length, header = int.from_bytes(data[pos + 2 : pos + 2 + count], "big"), 2 + count
    end = pos + header + length
    return end if end <= len(data) else None


def thumbprint(cert: x509.Certificate) -> str:
    """The SHA-1 thumbprint OPC UA tools show (hex, upper case)."""
    return hashlib.sha1(cert.public_bytes(Encoding.DER), usedforsecurity=False).hexdigest().upper()


def file_name(cert: x509.Certificate) -> str:
    """``<common name> [<thumbprint>].der``, the name UA tools give a certificate in a PKI folder."""
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    common = _UNSAFE.sub("_", str(names[0].value))[:64] if names else "certificate"
    return f"{common} [{thumbprint(cert)}].der"


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


@dataclass(frozen=True)
class _Loaded:
    trusted: list[x509.Certificate]
    issuers: list[x509.Certificate]
    crls: list[x509.CertificateRevocationList]


class TrustList:
    """The client certificates a PKI folder trusts; :meth:`check` is safe from any thread."""

    def __init__(self, root: Path) -> None:
        """Use (and create the sub-folders of) the PKI folder ``root``.

        Raises:
            PkiError: a sub-folder that cannot be created.
        """
        self.folders = PkiFolders(root)
        self.folders.create()
        self._lock = threading.Lock()
        self._stamp: tuple[int, ...] = ()
        self._loaded = _Loaded([], [], [])
        self._log = structlog.stdlib.get_logger(__name__)

    def _current(self) -> _Loaded:
        f = self.folders
        folders = (f.trusted, f.trusted_crl, f.issuers, f.issuers_crl)
        stamp = tuple(_mtime_ns(p) for p in folders)
        with self._lock:
            if stamp != self._stamp:
                self._loaded = _Loaded(
                    self._certificates(f.trusted),
                    self._certificates(f.issuers),
                    self._crls(f.trusted_crl) + self._crls(f.issuers_crl),
                )
                self._stamp = stamp
            return self._loaded

    def _certificates(self, folder: Path) -> list[x509.Certificate]:
        out = []
        for path in _files(folder, CERT_SUFFIXES):
            try:
                out.append(read_certificate(path))
            except PkiError as exc:
                self._log.warning("opcua_pki_file_skipped", error=str(exc))
        return out

    def _crls(self, folder: Path) -> list[x509.CertificateRevocationList]:
        out = []
        for path in _files(folder, CRL_SUFFIXES):
            try:
                out.append(_read_crl(path))
            except PkiError as exc:
                self._log.warning("opcua_pki_file_skipped", error=str(exc))
        return out

    def check(self, sender: bytes, now: datetime | None = None) -> Refusal | None:
        """None when the certificate (with the chain the client sent) may open a channel, else why not.

        An untrusted certificate is copied to ``rejected/``.
        """
        ders = split_der_chain(sender)
        try:
            leaf = x509.load_der_x509_certificate(ders[0])
            sent = [x509.load_der_x509_certificate(d) for d in ders[1:]]
        except ValueError as exc:
            return Refusal(StatusCodes.BadCertificateInvalid, f"not a DER certificate: {exc}")
        loaded = self._current()
        chain = self._chain(leaf, loaded, sent)
        if chain is None:
            self._reject(leaf)
            return Refusal(
                StatusCodes.BadCertificateUntrusted,
                f"certificate {file_name(leaf)} is not trusted (copied to the server's rejected/ folder)",
            )
        return _validity(leaf, chain, loaded.crls, now or datetime.now(UTC))

    def _chain(
        self, leaf: x509.Certificate, loaded: _Loaded, sent: list[x509.Certificate]
    ) -> list[x509.Certificate] | None:
        """The CAs from the leaf's issuer up to a trusted certificate ([] for a trusted leaf); None: untrusted."""
        if leaf in loaded.trusted:
            return []
        candidates = [(c, True) for c in loaded.trusted] + [(c, False) for c in loaded.issuers + sent]
        chain: list[x509.Certificate] = []
        current = leaf
        for _ in range(MAX_CHAIN_DEPTH):
            found = next(
                ((c, t) for c, t in candidates
                 if c.subject == current.issuer and c not in chain and _is_ca(c) and _issued_by(current, c)),
                None,
            )  # fmt: skip
            if found is None:
                return None
            issuer, trusted = found
            chain.append(issuer)
            if trusted:
                return chain
            current = issuer
        return None

    def _reject(self, cert: x509.Certificate) -> None:
        folder = self.folders.rejected
        target = folder / file_name(cert)
        try:
            if target.exists():
                return
            if sum(1 for _ in folder.iterdir()) >= MAX_REJECTED_FILES:
                self._log.warning("opcua_rejected_folder_full", folder=str(folder), limit=MAX_REJECTED_FILES)
                return
            _write_private(target, cert.public_bytes(Encoding.DER))
        except OSError as exc:
            self._log.warning("opcua_rejected_not_written", path=str(target), error=str(exc))


def _validity(
    leaf: x509.Certificate,
    chain: list[x509.Certificate],
    crls: list[x509.CertificateRevocationList],
    now: datetime,
) -> Refusal | None:
    """Validity periods and revocation of the leaf and each CA of its chain."""
    for index, cert in enumerate([leaf, *chain]):
        what = "certificate" if index == 0 else "issuer"
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            code = (
                StatusCodes.BadCertificateTimeInvalid
                if index == 0
                else StatusCodes.BadCertificateIssuerTimeInvalid
            )
            period = (
                f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} to {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
            )
            return Refusal(code, f"{what} {file_name(cert)} is valid from {period} only")  # fmt: skip
    for index, (cert, issuer) in enumerate(zip([leaf, *chain], chain, strict=False)):
        for crl in crls:
            if crl.issuer != issuer.subject or not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
                continue
            if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
                code = (
                    StatusCodes.BadCertificateRevoked
                    if index == 0
                    else StatusCodes.BadCertificateIssuerRevoked
                )
                return Refusal(code, f"certificate {file_name(cert)} is revoked by {file_name(issuer)}")  # fmt: skip
    return None


def _mtime_ns(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return -1


def _files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
    except OSError:
        return []


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def trust(path: Path, root: Path, issuer: bool = False) -> Path:
    """Put a certificate file into ``trusted/certs`` (or ``issuers/certs``) as DER; drop it from ``rejected/``.

    Returns:
        The file written.

    Raises:
        PkiError: the file is not a certificate, or the folder cannot be written.
    """
    cert = read_certificate(path)
    folders = PkiFolders(root)
    folders.create()
    target = (folders.issuers if issuer else folders.trusted) / file_name(cert)
    try:
        _write_private(target, cert.public_bytes(Encoding.DER))
        rejected = folders.rejected / file_name(cert)
        if rejected.exists():
            rejected.unlink()
    except OSError as exc:
        raise PkiError(f"{target}: {exc}") from None
    return target

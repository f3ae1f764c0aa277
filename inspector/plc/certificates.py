"""The server's own certificate: checked against ``[opcua]`` at start-up, and written by ``make-certificate``."""

from __future__ import annotations

import ipaddress
import os
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from inspector.config.opcua import OpcUaConfig
from inspector.plc.pki import PkiError, read_certificate

RSA_BITS = 2048  # Basic256Sha256 takes 2048 to 4096-bit RSA keys
RSA_EXPONENT = 65537
DEFAULT_VALID_DAYS = 730
BACKDATE = timedelta(minutes=5)  # a line PC whose clock is slightly behind the one that made the certificate
_KEY_USAGE = x509.KeyUsage(  # what OPC UA Part 6 asks of a self-signed application instance certificate
    digital_signature=True, content_commitment=True, key_encipherment=True, data_encipherment=True,
    key_agreement=False, key_cert_sign=True, crl_sign=False, encipher_only=False, decipher_only=False,
)  # fmt: skip


def application_uris(cert: x509.Certificate) -> list[str]:
    """The URIs of a certificate's SubjectAltName ([] without one)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(san.get_values_for_type(x509.UniformResourceIdentifier))


def certificate_problems(cfg: OpcUaConfig, now: datetime | None = None) -> list[str]:
    """What makes the server certificate unusable with ``cfg``: one line per problem, the field named first.

    The SubjectAltName URI must equal ``application_uri`` (strict clients refuse the server otherwise), the
    certificate must be within its validity period, and the private key must be the certificate's.
    """
    if cfg.certificate is None or cfg.private_key is None:
        return []
    try:
        cert = read_certificate(cfg.certificate)
    except PkiError as exc:
        return [f"opcua.certificate: {exc}"]
    problems = []
    uris = application_uris(cert)
    if cfg.application_uri not in uris:
        found = ", ".join(uris) if uris else "none"
        problems.append(
            f"opcua.certificate: {cfg.certificate} has the application URI {found} in its SubjectAltName, but "
            f"opcua.application_uri is {cfg.application_uri}: make them equal (inspector opcua make-certificate)"
        )
    moment = now or datetime.now(UTC)
    if not cert.not_valid_before_utc <= moment <= cert.not_valid_after_utc:
        problems.append(
            f"opcua.certificate: {cfg.certificate} is valid from {cert.not_valid_before_utc:%Y-%m-%d} to "
            f"{cert.not_valid_after_utc:%Y-%m-%d} only"
        )
    try:
        key = serialization.load_pem_private_key(cfg.private_key.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        return [
            *problems,
            f"opcua.private_key: {cfg.private_key}: not an unencrypted PEM private key ({exc})",
        ]
    if key.public_key() != cert.public_key():
        problems.append(f"opcua.private_key: {cfg.private_key} is not the key of {cfg.certificate}")
    return problems


def make_certificate(
    application_uri: str,
    certificate: Path,
    private_key: Path,
    hosts: list[str] | None = None,
    days: int = DEFAULT_VALID_DAYS,
    common_name: str = "inspector",
) -> x509.Certificate:
    """Write a self-signed application instance certificate (DER) and its key (PEM, mode 0600).

    The certificate has ``application_uri`` and the host names / addresses in its SubjectAltName, the key
    usages OPC UA asks of an application certificate, and serverAuth and clientAuth.

    Raises:
        PkiError: a file exists already, or cannot be written (the path is named).
    """
    for path in (certificate, private_key):
        if path.exists():
            raise PkiError(
                f"{path} exists: remove it first (a new key means re-trusting the server in every PLC)"
            )
    key = rsa.generate_private_key(public_exponent=RSA_EXPONENT, key_size=RSA_BITS)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    alt: list[x509.GeneralName] = [x509.UniformResourceIdentifier(application_uri)]
    for host in hosts or [socket.gethostname()]:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt.append(x509.DNSName(host))
    start = datetime.now(UTC) - BACKDATE
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_KEY_USAGE, critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        certificate.parent.mkdir(parents=True, exist_ok=True)
        private_key.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(private_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        certificate.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    except OSError as exc:
        raise PkiError(f"{exc.filename or certificate}: {exc.strerror or exc}") from None
    return cert

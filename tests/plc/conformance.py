"""What the node-opcua conformance tests share: the certificates a plant's clients hold, and the node runner."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NODE_DIR = Path(__file__).resolve().parent / "node"
NODE_TIMEOUT_S = 240.0  # one scenario on a loaded 2-core machine: node start, RSA handshakes, a daemon result
DAY = timedelta(days=1)


@dataclass(frozen=True)
class Identity:
    """A client's certificate (PEM and DER files), its key (PEM) and its application URI."""

    uri: str
    pem: Path
    der: Path
    key: Path
    cert: x509.Certificate


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def make_ca(folder: Path, common: str) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """A CA certificate (the plant's) and its key."""
    key = _key()
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(_name(common)).issuer_name(_name(common))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - DAY).not_valid_after(now + 365 * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
        ), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    (folder / f"{common}.der").write_bytes(cert.public_bytes(serialization.Encoding.DER))
    return cert, key


def make_client(
    folder: Path,
    common: str,
    issuer: tuple[x509.Certificate, rsa.RSAPrivateKey] | None = None,
    valid: tuple[timedelta, timedelta] = (-DAY, 365 * DAY),
) -> Identity:
    """A client application certificate: self-signed, or signed by ``issuer``; valid from/to now + ``valid``."""
    key = _key()
    uri = f"urn:conformance:{common}"
    now = datetime.now(UTC)
    issuer_name, signing_key = (issuer[0].subject, issuer[1]) if issuer else (_name(common), key)
    cert = (
        x509.CertificateBuilder().subject_name(_name(common)).issuer_name(issuer_name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now + valid[0]).not_valid_after(now + valid[1])
        .add_extension(x509.SubjectAlternativeName(
            [x509.UniformResourceIdentifier(uri), x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=True, key_encipherment=True, data_encipherment=True,
            key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
        ), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(signing_key, hashes.SHA256())
    )  # fmt: skip
    pem, der, key_path = folder / f"{common}.pem", folder / f"{common}.der", folder / f"{common}.key.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    der.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return Identity(uri, pem, der, key_path, cert)


def write_crl(
    path: Path, issuer: tuple[x509.Certificate, rsa.RSAPrivateKey], revoked: list[x509.Certificate]
) -> None:
    """A revocation list of ``issuer`` listing ``revoked`` (DER)."""
    now = datetime.now(UTC)
    builder = x509.CertificateRevocationListBuilder().issuer_name(issuer[0].subject)
    builder = builder.last_update(now - DAY).next_update(now + 30 * DAY)
    for cert in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(cert.serial_number)
            .revocation_date(now - DAY)
            .build()
        )
    path.write_bytes(builder.sign(issuer[1], hashes.SHA256()).public_bytes(serialization.Encoding.DER))


def node_binary() -> str:
    """The node executable; skips without one (Debian/NodeSource ``nodejs``), fails without node-opcua."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node not found: install Node.js 20 (apt-get install -y nodejs)")
    if not (NODE_DIR / "node_modules" / "node-opcua-client").is_dir():
        pytest.fail(f"node-opcua is not installed in {NODE_DIR}: run tools/bootstrap.sh --test")
    return node


def run_node(work: Path, scenario: dict[str, Any]) -> dict[str, Any]:
    """Run one scenario of ``tests/plc/node/plc.js``; what the client saw (fails on a crash of the script)."""
    work.mkdir(parents=True, exist_ok=True)
    index = len(list(work.glob("scenario-*.json")))
    source, out = work / f"scenario-{index}.json", work / f"seen-{index}.json"
    source.write_text(json.dumps({"work": str(work), **scenario}, default=str), encoding="utf-8")
    done = subprocess.run(
        [node_binary(), str(NODE_DIR / "plc.js"), str(source), str(out)],
        cwd=NODE_DIR, capture_output=True, text=True, timeout=NODE_TIMEOUT_S, check=False,
    )  # fmt: skip
    assert done.returncode == 0 and out.is_file(), f"node exited {done.returncode}: {done.stderr[-3000:]}"
    seen: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    assert "crashed" not in seen, seen.get("crashed")
    return seen

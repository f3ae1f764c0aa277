"""The PKI folder: trusted certificates and CAs, chains through issuers, validity, revocation, rejected/."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from asyncua.ua.status_codes import StatusCodes
from cryptography.hazmat.primitives.serialization import Encoding

from inspector.plc.pki import MAX_REJECTED_FILES, PkiError, TrustList, split_der_chain, trust
from tests.plc.conformance import DAY, make_ca, make_client, write_crl


def der(path: Path) -> bytes:
    return path.read_bytes()


def test_a_self_signed_certificate_is_trusted_only_once_it_is_in_trusted_certs(tmp_path: Path) -> None:
    pki, who = tmp_path / "pki", make_client(tmp_path, "uaexpert")
    trusts = TrustList(pki)
    refusal = trusts.check(der(who.der))
    assert refusal is not None and refusal.code == StatusCodes.BadCertificateUntrusted
    assert refusal.name == "BadCertificateUntrusted" and str(pki) not in refusal.reason
    (rejected,) = (pki / "rejected").iterdir()
    assert rejected.read_bytes() == der(who.der)
    trust(rejected, pki)
    assert not rejected.exists()
    assert trusts.check(der(who.der)) is None, "a certificate moved to trusted/ is not seen without a restart"


def test_a_certificate_chains_to_a_trusted_ca_through_issuers_and_the_chain_the_client_sends(
    tmp_path: Path,
) -> None:
    pki = tmp_path / "pki"
    root = make_ca(tmp_path, "root")
    trust(tmp_path / "root.der", pki)
    leaf = make_client(tmp_path, "plc", root)
    assert TrustList(pki).check(der(leaf.der)) is None
    other = make_ca(tmp_path, "other")
    stranger = make_client(tmp_path, "stranger", other)
    assert TrustList(pki).check(der(stranger.der)) is not None
    trust(tmp_path / "other.der", pki, issuer=True)  # only completes chains: not trusted by itself
    assert TrustList(pki).check(der(stranger.der)) is not None
    sent = der(leaf.der) + root[0].public_bytes(Encoding.DER)
    assert split_der_chain(sent) == [der(leaf.der), root[0].public_bytes(Encoding.DER)]
    assert TrustList(pki).check(sent) is None


@pytest.mark.parametrize(
    ("valid", "code"),
    [
        ((-30 * DAY, -DAY), StatusCodes.BadCertificateTimeInvalid),
        ((DAY, 30 * DAY), StatusCodes.BadCertificateTimeInvalid),
    ],
)
def test_a_trusted_certificate_out_of_its_validity_period_is_refused(
    tmp_path: Path, valid: tuple[object, object], code: int
) -> None:
    pki = tmp_path / "pki"
    ca = make_ca(tmp_path, "ca")
    trust(tmp_path / "ca.der", pki)
    who = make_client(tmp_path, "plc", ca, valid)  # type: ignore[arg-type]
    refusal = TrustList(pki).check(der(who.der))
    assert refusal is not None and refusal.code == code
    assert list((pki / "rejected").iterdir()) == [], "a trusted certificate is copied to rejected/"


def test_a_revocation_list_counts_only_when_the_issuer_signed_it(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    ca, forger = make_ca(tmp_path, "ca"), make_ca(tmp_path, "forger")
    trust(tmp_path / "ca.der", pki)
    revoked, kept = make_client(tmp_path, "revoked", ca), make_client(tmp_path, "kept", ca)
    forged = (ca[0], forger[1])  # the CA's name, another key
    write_crl(pki / "trusted" / "crl" / "forged.crl", forged, [kept.cert])
    write_crl(pki / "trusted" / "crl" / "ca.crl", ca, [revoked.cert])
    refusal = TrustList(pki).check(der(revoked.der))
    assert refusal is not None and refusal.code == StatusCodes.BadCertificateRevoked
    assert TrustList(pki).check(der(kept.der)) is None


def test_garbage_is_refused_and_rejected_never_grows_past_its_limit(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    trusts = TrustList(pki)
    refusal = trusts.check(b"\x30\x03\x02\x01\x00")
    assert refusal is not None and refusal.code == StatusCodes.BadCertificateInvalid
    for index in range(MAX_REJECTED_FILES):
        (pki / "rejected" / f"filler-{index}.der").write_bytes(b"x")
    trusts.check(der(make_client(tmp_path, "late").der))
    assert len(list((pki / "rejected").iterdir())) == MAX_REJECTED_FILES


def test_trust_names_a_file_that_is_not_a_certificate(tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("not a certificate", encoding="utf-8")
    with pytest.raises(PkiError, match="notes.txt"):
        trust(bad, tmp_path / "pki")


def test_the_check_uses_the_time_it_is_given(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    ca = make_ca(tmp_path, "ca")
    trust(tmp_path / "ca.der", pki)
    who = make_client(tmp_path, "plc", ca)
    later = datetime.now(UTC) + 400 * DAY
    refusal = TrustList(pki).check(der(who.der), later)
    assert refusal is not None and refusal.code == StatusCodes.BadCertificateTimeInvalid

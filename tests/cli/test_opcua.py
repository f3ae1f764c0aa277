"""``inspector opcua make-certificate`` and ``trust``, and the server certificate checked against ``[opcua]``."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from inspector.cli.main import main
from inspector.config.opcua import OpcUaConfig
from inspector.core.names import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK
from inspector.plc.certificates import application_uris, certificate_problems
from inspector.plc.pki import read_certificate
from tests.plc.conformance import DAY, make_client
from tests.toml_config import write_daemon_config


def opcua_config(tmp_path: Path, uri: str) -> Path:
    return write_daemon_config(
        tmp_path / "inspector.toml", root={}, opcua={
            "application_uri": uri, "certificate": tmp_path / "server.der", "private_key": tmp_path / "server.pem",
            "pki_dir": tmp_path / "pki",
        },
    )  # fmt: skip


def test_make_certificate_writes_the_configured_uri_opcua_key_usages_and_a_private_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = opcua_config(tmp_path, "urn:line-3:inspector")
    assert (
        main(["opcua", "make-certificate", "--config", str(config), "--host", "line-3", "--host", "10.0.0.3"])
        == 0
    )
    cert = read_certificate(tmp_path / "server.der")
    assert application_uris(cert) == ["urn:line-3:inspector"]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert (
        san.get_values_for_type(x509.DNSName) == ["line-3"]
        and len(san.get_values_for_type(x509.IPAddress)) == 1
    )
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert (
        usage.digital_signature
        and usage.content_commitment
        and usage.key_encipherment
        and usage.data_encipherment
    )
    assert (tmp_path / "server.pem").stat().st_mode & 0o077 == 0, "the private key is readable by others"
    assert "urn:line-3:inspector" in capsys.readouterr().out
    assert main(["opcua", "make-certificate", "--config", str(config)]) == EXIT_FAILURE, "overwrote a key"


def test_a_certificate_whose_uri_differs_from_application_uri_exits_78_naming_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = opcua_config(tmp_path, "urn:line-3:inspector")
    made = ["opcua", "make-certificate", "--application-uri", "urn:freeopcua:python:server"]
    assert main([*made, "--config", str(config)]) == EXIT_OK
    capsys.readouterr()
    assert main(["opcua", "--config", str(config)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert (
        "urn:freeopcua:python:server" in err and "urn:line-3:inspector" in err and "opcua.certificate" in err
    )


def test_certificate_problems_name_an_expired_certificate_and_a_foreign_key(tmp_path: Path) -> None:
    old = make_client(tmp_path, "old", valid=(-10 * DAY, -DAY))
    cfg = OpcUaConfig(
        application_uri=old.uri, certificate=old.der, private_key=make_client(tmp_path, "other").key,
        pki_dir=tmp_path / "pki",
    )  # fmt: skip
    problems = certificate_problems(cfg)
    assert len(problems) == 2
    assert "valid from" in problems[0] and "is not the key of" in problems[1]


def test_trust_puts_a_certificate_into_trusted_certs_of_the_configured_pki_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = opcua_config(tmp_path, "urn:line-3:inspector")
    who = make_client(tmp_path, "uaexpert")
    assert main(["opcua", "trust", str(who.pem), "--config", str(config)]) == EXIT_OK
    (trusted,) = (tmp_path / "pki" / "trusted" / "certs").iterdir()
    assert trusted.read_bytes() == who.der.read_bytes() and str(trusted) in capsys.readouterr().out
    assert main(["opcua", "trust", str(tmp_path / "missing.der"), "--config", str(config)]) == EXIT_FAILURE

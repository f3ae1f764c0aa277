"""Tests for inspector.outputs.mqtt_client's files and reasons: the password file, the TLS context from a test CA
made by openssl, the problems ``check-config`` reports, and how a failure is classified."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from inspector.config.mqtt import MqttConfig
from inspector.outputs.mqtt_client import (
    MqttConfigError,
    connection_problems,
    failure_kind,
    read_password,
    tls_context,
)
from tests.mosquitto import make_ca, missing_reason


def _password(tmp_path: Path, text: str, mode: int = 0o600) -> MqttConfig:
    path = tmp_path / "password"
    path.write_text(text)
    path.chmod(mode)
    return MqttConfig(username="u", password_file=path)


def test_the_password_is_read_stripped_and_a_bad_file_is_refused_naming_the_field(tmp_path: Path) -> None:
    assert read_password(MqttConfig()) is None
    assert read_password(_password(tmp_path, "s3cret\n")) == "s3cret"
    for text, mode, says in (("\n", 0o600, "is empty"), ("s3cret", 0o640, "readable by group or others")):
        with pytest.raises(MqttConfigError, match=f"^mqtt.password_file: .*{says}"):
            read_password(_password(tmp_path, text, mode))
    with pytest.raises(MqttConfigError, match="^mqtt.password_file: key file .*: file not found"):
        read_password(MqttConfig(username="u", password_file=tmp_path / "nope"))


@pytest.mark.skipif(missing_reason() is not None, reason=missing_reason() or "")
def test_the_tls_context_verifies_the_broker_and_loads_the_client_certificate(tmp_path: Path) -> None:
    assert tls_context(MqttConfig()) is None
    ca = make_ca(tmp_path / "ca")
    config = MqttConfig(
        tls=True, tls_ca_file=ca.ca, tls_certificate=ca.cert("client"), tls_private_key=ca.key("client")
    )
    context = tls_context(config)
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    wrong_key = config.model_copy(update={"tls_private_key": ca.key("server")})
    with pytest.raises(MqttConfigError, match="^mqtt.tls_certificate: cannot load .* with its key"):
        tls_context(wrong_key)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(MqttConfigError, match=f"^mqtt.tls_ca_file: cannot load {garbage}: "):
        tls_context(MqttConfig(tls=True, tls_ca_file=garbage))


def test_check_config_problems_only_when_enabled(tmp_path: Path) -> None:
    config = MqttConfig(username="u", password_file=tmp_path / "nope")
    assert connection_problems(config) == []
    (problem,) = connection_problems(config.model_copy(update={"enabled": True}))
    assert problem.startswith("mqtt.password_file: ")


def test_a_failure_is_tls_when_ssl_says_so_and_network_otherwise() -> None:
    assert failure_kind(ssl.SSLCertVerificationError("certificate verify failed")) == "tls"
    assert failure_kind(ConnectionRefusedError(111, "Connection refused")) == "network"
    assert failure_kind("failed to receive on socket: [SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] ...") == "tls"
    assert failure_kind("failed to receive on socket: timed out") == "network"

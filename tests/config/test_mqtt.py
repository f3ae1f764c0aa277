"""Tests for the ``[mqtt]`` section: defaults, each bad field named, every field in the example, and the files
``check-config`` and ``run`` refuse with exit 78 naming the field."""

from __future__ import annotations

import re
import socket
import tomllib
from pathlib import Path

import pytest

from inspector.cli.main import main
from inspector.config.load import ConfigError, load_config
from inspector.config.mqtt import MqttConfig
from inspector.core.names import EXIT_CONFIG
from tests.mosquitto import make_ca
from tests.support import REPO_ROOT, SyntheticGallery, run_cli

EXAMPLE = REPO_ROOT / "config" / "inspector.example.toml"
SECRET_MODE = 0o600


def _problems(tmp_path: Path, mqtt: str) -> list[str]:
    path = tmp_path / "inspector.toml"
    path.write_text(f"[mqtt]\n{mqtt}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


def test_mqtt_is_off_by_default_with_qos_1_a_bounded_queue_and_commands_off() -> None:
    config = MqttConfig()
    assert (config.enabled, config.qos, config.commands_enabled, config.snapshot_max_fps) == (
        False,
        1,
        False,
        0.0,
    )
    assert config.queue_size > 0 and config.port == 1883
    assert config.resolved_client_id() == f"inspector-{socket.gethostname()}-inspector"
    assert MqttConfig(topic_prefix="plant/line3").resolved_client_id().endswith("-plant-line3")


@pytest.mark.parametrize(
    ("text", "field", "says"),
    [
        ('password_file = "/p"', "mqtt.password_file", "needs a username"),
        ('tls_ca_file = "/ca.crt"', "mqtt.tls_ca_file", "only with tls = true"),
        ('tls = true\ntls_certificate = "/c.crt"', "mqtt.tls_private_key", "go together"),
        ('tls = true\ntls_private_key = "/c.key"', "mqtt.tls_private_key", "go together"),
        ('topic_prefix = "plant/#"', "mqtt.topic_prefix", "wildcards"),
        ('topic_prefix = "/plant"', "mqtt.topic_prefix", "must not start with /"),
        ('topic_prefix = "plant//line"', "mqtt.topic_prefix", "levels are non-empty"),
        ("qos = 3", "mqtt.qos", "less than or equal to 2"),
        ("queue_size = 0", "mqtt.queue_size", "greater than or equal to 1"),
        ('client_id = "a b"', "mqtt.client_id", "should match pattern"),
        ("snapshot_max_fps = -1", "mqtt.snapshot_max_fps", "greater than or equal to 0"),
        ("commands_enabled = true", "mqtt.commands_enabled", "authenticated connection"),
        ('username = "u"\ncommands_enabled = true', "mqtt.commands_enabled", "authenticated connection"),
        ("prot = 1883", "mqtt.prot", "Extra inputs are not permitted"),
    ],
)
def test_each_bad_mqtt_field_is_refused_naming_the_field(
    tmp_path: Path, text: str, field: str, says: str
) -> None:
    (problem,) = _problems(tmp_path, text)
    assert problem.startswith(f"{field}: ") and says in problem, problem


def test_commands_are_accepted_with_a_password_login_or_a_client_certificate() -> None:
    with_password = MqttConfig(username="u", password_file=Path("/p"), commands_enabled=True)
    with_certificate = MqttConfig(
        tls=True, tls_certificate=Path("/c"), tls_private_key=Path("/k"), commands_enabled=True
    )
    assert with_password.commands_enabled and with_certificate.commands_enabled


def test_the_example_shows_every_mqtt_field_set_or_commented_and_it_validates() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    section = text[text.index("\n[mqtt]\n") :]
    section = section[: section.index("\n# ------")]
    shown = set(re.findall(r"^(?:# )?([a-z_0-9]+) = ", section, flags=re.MULTILINE))
    assert shown == set(MqttConfig.model_fields), (
        f"[mqtt] does not show {set(MqttConfig.model_fields) - shown}"
    )
    data = tomllib.loads(text)["mqtt"]
    assert MqttConfig.model_validate(data) == MqttConfig()


def _daemon_config(tmp_path: Path, gallery: Path, mqtt: str) -> Path:
    path = tmp_path / "inspector.toml"
    path.write_text(
        f'[worker]\ngallery = "{gallery}"\n[[cameras]]\nname = "a"\nsource = "0"\n[mqtt]\nenabled = true\n{mqtt}\n',
        encoding="utf-8",
    )
    return path


def test_check_config_exits_78_naming_each_mqtt_file_that_cannot_be_used(
    tmp_path: Path, synthetic_gallery: SyntheticGallery, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = make_ca(tmp_path / "ca")
    ca.key("client").chmod(0o644)  # a private key others can read
    not_a_ca = tmp_path / "not-a-ca.pem"
    not_a_ca.write_text("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    mqtt = (
        f'username = "u"\npassword_file = "{tmp_path / "missing"}"\ntls = true\ntls_ca_file = "{not_a_ca}"\n'
        f'tls_certificate = "{ca.cert("client")}"\ntls_private_key = "{ca.key("client")}"'
    )
    path = _daemon_config(tmp_path, synthetic_gallery.path, mqtt)
    assert main(["check-config", str(path)]) == EXIT_CONFIG
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"{path}: mqtt.password_file: key file {tmp_path / 'missing'}: file not found")
    assert lines[1].startswith(f"{path}: mqtt.tls_ca_file: cannot load {not_a_ca}: ")
    not_a_ca.unlink()
    ca_ok = f'tls = true\ntls_ca_file = "{ca.ca}"\n'
    path = _daemon_config(tmp_path, synthetic_gallery.path, ca_ok + f'tls_certificate = "{ca.cert("client")}"\n'
                          f'tls_private_key = "{ca.key("client")}"')  # fmt: skip
    assert main(["check-config", str(path)]) == EXIT_CONFIG
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(
        f"{path}: mqtt.tls_private_key: key file {ca.key('client')}: secret key readable by"
    )
    ca.key("client").chmod(SECRET_MODE)
    assert main(["check-config", str(path)]) == 0
    assert "mqtt: mqtts://127.0.0.1:1883/inspector" in capsys.readouterr().out


def test_run_exits_78_naming_an_unreadable_mqtt_password_file(
    tmp_path: Path, synthetic_gallery: SyntheticGallery
) -> None:
    password = tmp_path / "mqtt-password"
    password.write_text("secret\n")
    password.chmod(0o644)
    path = _daemon_config(tmp_path, synthetic_gallery.path, f'username = "u"\npassword_file = "{password}"')
    done = run_cli("run", "--config", path)
    assert done.returncode == EXIT_CONFIG, done.stderr
    assert f"mqtt.password_file: key file {password}: secret key readable by group or others" in done.stderr
    assert "Traceback" not in done.stderr

"""The ``[mqtt]`` section: verdicts, camera state and availability published to an MQTT broker (paho-mqtt 2)."""

from __future__ import annotations

import re
import socket
from pathlib import Path

from pydantic import Field, ValidationInfo, field_validator

from inspector.config.base import StrictModel

DEFAULT_MQTT_PORT = 1883  # IANA: MQTT; 8883 is MQTT over TLS
CLIENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
MAX_PREFIX_CHARS = 128
_PREFIX_FORBIDDEN = re.compile(r"[#+\x00]")


def default_client_id(topic_prefix: str) -> str:
    """``inspector-<hostname>-<prefix>``: unique per line PC and prefix (a broker drops the older of two
    clients with one id, so two daemons sharing one would take turns being disconnected)."""
    raw = f"inspector-{socket.gethostname()}-{topic_prefix.replace('/', '-')}"
    return re.sub(r"[^A-Za-z0-9_.:-]", "-", raw)[:128]


class MqttConfig(StrictModel):
    """Where and how verdicts go to an MQTT broker; off unless enabled."""

    enabled: bool = Field(False, description="Publish verdicts, camera state and availability to a broker.")
    host: str = Field("127.0.0.1", min_length=1, description="The broker's host name or address.")
    port: int = Field(
        DEFAULT_MQTT_PORT, ge=1, le=65535, description="The broker's TCP port (TLS: usually 8883)."
    )
    client_id: str | None = Field(
        None,
        pattern=CLIENT_ID_PATTERN,
        description="MQTT client id; None: inspector-<hostname>-<topic_prefix>. Unique per broker.",
    )
    username: str | None = Field(None, min_length=1, description="User name the broker authenticates.")
    password_file: Path | None = Field(
        None, description="File holding the password (mode 0600; read at start-up, never logged)."
    )
    tls: bool = Field(
        False, description="Connect with TLS, verifying the broker's certificate and host name."
    )
    tls_ca_file: Path | None = Field(
        None, description="CA certificates (PEM) the broker's certificate must chain to; None: the system's."
    )
    tls_certificate: Path | None = Field(
        None, description="Client certificate (PEM) presented to a broker that asks for one."
    )
    tls_private_key: Path | None = Field(
        None, validate_default=True, description="The client certificate's private key (PEM, mode 0600)."
    )
    topic_prefix: str = Field(
        "inspector",
        min_length=1,
        max_length=MAX_PREFIX_CHARS,
        description="First topic levels, e.g. inspector/line3: <prefix>/<camera>/verdict, <prefix>/availability.",
    )
    qos: int = Field(1, ge=0, le=2, description="QoS of verdicts, state and availability (1: at least once).")
    keepalive_s: int = Field(
        60, ge=5, le=3600, description="MQTT keep-alive: the broker declares the daemon gone after 1.5x this."
    )
    connect_timeout_s: float = Field(
        5.0, gt=0.0, le=120.0, description="How long one attempt to connect (TCP, TLS, CONNACK) may take."
    )
    reconnect_max_s: int = Field(
        30,
        ge=1,
        le=3600,
        description="Longest wait between two attempts to reach the broker (from 1 s, doubling).",
    )
    queue_size: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="Verdicts waiting while the broker is slow or down; when full, new ones are dropped (counted).",
    )
    flush_timeout_s: float = Field(
        5.0, ge=0.0, le=600.0, description="At stop, seconds allowed to send what is still queued."
    )
    snapshot_max_fps: float = Field(
        0.0,
        ge=0.0,
        le=30.0,
        description="Overlay JPEGs of FAIL and REVIEW parts on <prefix>/<camera>/snapshot, at most this many per "
        "second per camera (0: none).",
    )
    snapshot_jpeg_quality: int = Field(80, ge=1, le=100, description="JPEG quality of the snapshots.")
    snapshot_max_width_px: int = Field(
        1280, ge=64, le=16384, description="Wider frames are scaled down to this width for a snapshot."
    )
    commands_enabled: bool = Field(
        False,
        description="Take trigger and product commands on <prefix>/<camera>/command/<cmd>; needs the daemon's "
        "own login (username + password_file, or a TLS client certificate) and a broker ACL (docs/mqtt.md).",
    )

    @field_validator("password_file")
    @classmethod
    def _password_needs_user(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None and info.data.get("username") is None:
            raise ValueError("a password_file needs a username")
        return value

    @field_validator("tls_ca_file", "tls_certificate")
    @classmethod
    def _needs_tls(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None and not info.data.get("tls"):
            raise ValueError(f"{info.field_name} is used only with tls = true")
        return value

    @field_validator("tls_private_key")
    @classmethod
    def _key_with_certificate(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None and not info.data.get("tls"):
            raise ValueError("tls_private_key is used only with tls = true")
        if (value is None) != (info.data.get("tls_certificate") is None):
            raise ValueError("tls_certificate and tls_private_key go together: set both or neither")
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _prefix_is_a_topic(cls, value: str) -> str:
        if _PREFIX_FORBIDDEN.search(value):
            raise ValueError(f"{value!r} must not contain the wildcards + and # (or NUL)")
        if value.startswith(("/", "$")) or value.endswith("/") or "//" in value:
            raise ValueError(
                f"{value!r}: levels are non-empty and it must not start with / or $, e.g. inspector/line3"
            )
        return value

    @field_validator("commands_enabled")
    @classmethod
    def _commands_need_a_login(cls, value: bool, info: ValidationInfo) -> bool:
        data = info.data
        password_login = data.get("username") is not None and data.get("password_file") is not None
        if value and not (password_login or data.get("tls_certificate") is not None):
            raise ValueError(
                "commands are taken only on an authenticated connection: set username and password_file, or "
                "tls_certificate and tls_private_key (and give the broker an ACL, docs/mqtt.md)"
            )
        return value

    def resolved_client_id(self) -> str:
        """The client id used: ``client_id``, else ``inspector-<hostname>-<topic_prefix>``."""
        return self.client_id if self.client_id is not None else default_client_id(self.topic_prefix)

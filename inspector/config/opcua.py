"""The ``[opcua]`` section: the OPC UA server PLCs and SCADA read results from (``inspector opcua``)."""

from __future__ import annotations

import socket
from pathlib import Path

from pydantic import Field, model_validator

from inspector.config.base import StrictModel

DEFAULT_OPCUA_PORT = 4840  # the IANA port of OPC UA binary
APPLICATION_URI_PATTERN = r"^[A-Za-z][A-Za-z0-9+.\-]*:\S+$"  # an absolute URI (urn:..., http://...)


def default_application_uri() -> str:
    """``urn:<hostname>:inspector``: unique per line PC, as OPC UA wants an application URI to be."""
    return f"urn:{socket.gethostname()}:inspector"


class OpcUaConfig(StrictModel):
    """Address, security and result handshake of the OPC UA server."""

    enabled: bool = Field(
        False, description="Run the OPC UA server inside the daemon (else: inspector opcua)."
    )
    bind_address: str = Field("127.0.0.1", description="Address the server listens on (0.0.0.0: every one).")
    port: int = Field(
        DEFAULT_OPCUA_PORT, ge=0, le=65535, description="TCP port (4840 is OPC UA's; 0 picks one)."
    )
    allow_anonymous: bool = Field(
        False, description="Accept anonymous sessions (off: a user or a certificate)."
    )
    users_file: Path | None = Field(
        None,
        description="TOML file of [users] name = hash lines (hashes from `inspector opcua hash-password`); a "
        "systemd LoadCredential= path works.",
    )
    application_uri: str = Field(
        default_factory=default_application_uri,
        pattern=APPLICATION_URI_PATTERN,
        description="The server's application URI (default urn:<hostname>:inspector); the certificate's "
        "SubjectAltName URI must equal it.",
    )
    certificate: Path | None = Field(
        None,
        description="Server certificate (DER or PEM): enables Basic256Sha256 "
        "(`inspector opcua make-certificate` writes one).",
    )
    private_key: Path | None = Field(None, description="The certificate's private key (PEM).")
    pki_dir: Path | None = Field(
        None,
        description="PKI folder (trusted/, issuers/ with certs/ and crl/, rejected/): client certificates "
        "allowed to open a secure channel; required with a certificate.",
    )
    client_certificates: list[Path] = Field(
        default_factory=list, description="Client certificates accepted as X509 user identities."
    )
    allow_unencrypted: bool = Field(
        False,
        description="With a certificate, also offer a None-security endpoint (passwords then go in clear).",
    )
    results_per_camera: int = Field(
        8,
        ge=1,
        le=1024,
        description="Results a camera keeps until acknowledged; beyond, the oldest is overwritten.",
    )
    silence_budget_s: float = Field(
        3.0, gt=0.0, le=600.0,
        description="No heartbeat for this long sets every camera not ready: the PLC rejects parts, never a stale PASS.",
    )  # fmt: skip
    request_timeout_s: float = Field(
        30.0, gt=0.0, le=600.0, description="Longest a method call waits for the daemon's control socket."
    )
    login_failures_before_slowdown: int = Field(
        5, ge=1, le=1000,
        description="Failed logins from one client address (within 10 minutes) after which its logins are slowed.",
    )  # fmt: skip
    login_slowdown_max_s: float = Field(
        5.0, ge=0.0, le=20.0, description="The longest a slowed login waits before it is checked (doubling per failure)."
    )  # fmt: skip

    @model_validator(mode="after")
    def _key_with_certificate(self) -> OpcUaConfig:
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("certificate and private_key go together: set both or neither")
        if self.certificate is not None and self.pki_dir is None:
            raise ValueError(
                "pki_dir is required with a certificate: the folder of the client certificates trusted for a "
                "secure channel (docs/plc.md)"
            )
        return self

"""The ``[security]`` section: who may sign galleries (and, for the sockets, CURVE keys)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from inspector.config.base import StrictModel

MAX_KEY_FILES = 64


class SecurityConfig(StrictModel):
    """Key files only, never keys: paths may use ``${CREDENTIALS_DIRECTORY}`` (systemd ``LoadCredential=``)."""

    gallery_signers: list[Path] = Field(
        default_factory=list,
        max_length=MAX_KEY_FILES,
        description="Ed25519 public key files (inspector keys generate). When set, the daemon loads only "
        "galleries with a valid detached <gallery>.sig by one of them (inspector gallery sign), at start-up and "
        "at every reload; empty: signatures are not checked.",
    )
    curve_server_secret_key: Path | None = Field(
        None,
        description="The daemon's CURVE secret key file (NAME.key_secret of inspector keys generate --curve, mode "
        "0600). Set: the bus, trigger and control sockets speak CURVE only and accept only the clients in "
        "curve_allowed_clients; unset: no authentication (keep the sockets on 127.0.0.1).",
    )
    curve_allowed_clients: list[Path] = Field(
        default_factory=list,
        max_length=MAX_KEY_FILES,
        description="Public key files (NAME.key) of the CURVE clients allowed: subscribers, PLCs, ctl, proxies.",
    )

    allow_plaintext_network: bool = Field(
        False,
        description="Let the bus, trigger and control sockets listen beyond this machine without CURVE "
        "(anyone on that network can then read every verdict, subscribe without limit of identity, and "
        "drive the line). Off: such a config is refused at start.",
    )

    @model_validator(mode="after")
    def _curve_complete(self) -> SecurityConfig:
        if self.curve_server_secret_key is not None and not self.curve_allowed_clients:
            raise ValueError(
                "curve_server_secret_key is set but curve_allowed_clients is empty: nobody could connect"
            )
        if self.curve_server_secret_key is None and self.curve_allowed_clients:
            raise ValueError(
                "curve_allowed_clients is set but curve_server_secret_key is not: CURVE would be off"
            )
        return self

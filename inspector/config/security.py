"""The ``[security]`` section: who may sign galleries (and, for the sockets, CURVE keys)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

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

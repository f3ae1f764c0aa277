"""The ``[control]`` section: the ZeroMQ REP socket the PLC gateway and ``inspector ctl`` talk to."""

from __future__ import annotations

from pydantic import Field

from inspector.config.base import StrictModel


class ControlConfig(StrictModel):
    """Status, triggers, product changes, reloads, pause and resume, as JSON requests and answers."""

    enabled: bool = Field(False, description="Serve the control socket at all (off by default).")
    bind: str = Field("tcp://127.0.0.1:5561", description="ZeroMQ endpoint of the REP socket.")

"""asyncua's server with the checks a strict OPC UA peer expects at the protocol level.

* **Secure channel trust**: an OpenSecureChannel request's client certificate is checked against the PKI
  folder (``inspector.plc.pki``) before asyncua opens the channel; a refused one gets an OPC UA Error message
  (``BadCertificateUntrusted``, ``BadCertificateTimeInvalid``, ``BadCertificateRevoked``, ...) and the
  connection is closed.
* **Logins off the loop**: an ActivateSession request's password is checked on a worker thread (the same work
  for an unknown user), after the delay a failing client address has earned; asyncua's user manager then only
  reads the verdict (:data:`inspector.plc.users.ATTEMPT`).

asyncua has no public hook for either, so this module subclasses its server, binary server, protocol and
processor; ``pyproject.toml`` pins the asyncua minor version these were written against, and the tests in
``tests/plc/`` exercise both paths through real clients (asyncua's and node-opcua's).
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from asyncua import ua
from asyncua.crypto.security_policies import SecurityPolicyNone
from asyncua.server.binary_server_asyncio import BinaryServer, OPCUAProtocol
from asyncua.server.server import Server
from asyncua.server.uaprocessor import UaProcessor
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.ua_binary import struct_from_binary, uatcp_to_binary

from inspector.plc.methods import status
from inspector.plc.pki import TrustList
from inspector.plc.users import ATTEMPT, AccessManager, LoginAttempt, LoginGuard

ACTIVATE_SESSION = ua.NodeId(ua.Int32(ObjectIds.ActivateSessionRequest_Encoding_DefaultBinary))
NULL_NODE = ua.NodeId(ua.Int32(ObjectIds.Null))


class Guards:
    """What the stack checks: the channel's certificate (None: every one), and logins."""

    def __init__(self, trust: TrustList | None, access: AccessManager, logins: LoginGuard) -> None:
        """Keep the checkers."""
        self.trust = trust
        self.access = access
        self.logins = logins
        self.log = structlog.stdlib.get_logger(__name__)


class GuardedProcessor(UaProcessor):
    """asyncua's per-connection processor, checking the channel certificate and passwords first."""

    def __init__(self, iserver: Any, transport: Any, limits: Any, guards: Guards) -> None:
        """asyncua's processor with the guards."""
        super().__init__(iserver, transport, limits)
        self._guards = guards
        peer = transport.get_extra_info("peername")
        self._address = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"

    async def process(self, header: Any, body: Any) -> bool:
        """Refuse an untrusted channel before asyncua opens it (an Error message, then the connection closes)."""
        trust = self._guards.trust
        if (
            trust is not None
            and header.MessageType == ua.MessageType.SecureOpen
            and not self._connection.is_open()
        ):
            security = struct_from_binary(ua.AsymmetricAlgorithmHeader, body.copy(header.body_size))
            if security.SecurityPolicyURI != SecurityPolicyNone.URI and security.SenderCertificate:
                refusal = await asyncio.to_thread(trust.check, security.SenderCertificate)
                if refusal is not None:
                    self._guards.log.warning(
                        "opcua_channel_refused",
                        address=self._address,
                        status=refusal.name,
                        reason=refusal.reason,
                    )
                    message = ua.ErrorMessage(status(refusal.code), ua.String(refusal.reason))
                    self._transport.write(uatcp_to_binary(ua.MessageType.Error, message))  # type: ignore[arg-type]
                    return False
        result: bool = await super().process(header, body)  # type: ignore[no-untyped-call]
        return result

    async def _process_message(self, typeid: Any, requesthdr: Any, seqhdr: Any, body: Any) -> Any:
        if typeid != ACTIVATE_SESSION:
            return await super()._process_message(typeid, requesthdr, seqhdr, body)  # type: ignore[no-untyped-call]
        attempt = await self._precheck(requesthdr, body)
        token = ATTEMPT.set(attempt)
        try:
            return await super()._process_message(typeid, requesthdr, seqhdr, body)  # type: ignore[no-untyped-call]
        finally:
            ATTEMPT.reset(token)

    async def _precheck(self, requesthdr: Any, body: Any) -> LoginAttempt:
        """Wait out the address's slow-down, then check a password on a worker thread."""
        guards = self._guards
        delay_s = guards.logins.delay_s(self._address)
        if delay_s > 0:
            guards.log.warning("opcua_login_slowed", address=self._address, delay_s=delay_s)
            await asyncio.sleep(delay_s)
        try:
            params = struct_from_binary(ua.ActivateSessionParameters, body.copy())
        except Exception:  # noqa: BLE001 - asyncua answers the malformed request itself
            return LoginAttempt(self._address)
        token = params.UserIdentityToken
        if isinstance(token, ua.AnonymousIdentityToken) or (
            isinstance(token, ua.ExtensionObject) and token.TypeId == NULL_NODE
        ):
            return LoginAttempt(self._address, anonymous=True)
        if not isinstance(token, ua.UserNameIdentityToken):
            return LoginAttempt(self._address)
        session = self.session or self.iserver.lookup_external_session(requesthdr.AuthenticationToken)
        if session is None:
            return LoginAttempt(self._address)
        try:
            username, password = self.iserver.decrypt_user_token(session, token)
        except Exception:  # noqa: BLE001 - asyncua refuses the token itself (BadIdentityTokenInvalid)
            return LoginAttempt(self._address)
        ok = await asyncio.to_thread(guards.access.check_user, username, password)
        return LoginAttempt(self._address, username=username, password=password, password_ok=ok)


class GuardedProtocol(OPCUAProtocol):
    """asyncua's connection protocol with a :class:`GuardedProcessor`."""

    def __init__(self, guards: Guards, **kwargs: Any) -> None:
        """asyncua's protocol with the guards."""
        super().__init__(**kwargs)
        self._guards = guards

    def connection_made(self, transport: Any) -> None:
        """asyncua's set-up, then the guarded processor in place of its own (before any message arrives)."""
        super().connection_made(transport)
        if self.processor is not None:
            self.processor = GuardedProcessor(self.iserver, self.transport, self.limits, self._guards)
            self.processor.set_policies(self.policies)  # type: ignore[no-untyped-call]


class GuardedBinaryServer(BinaryServer):
    """asyncua's TCP listener making :class:`GuardedProtocol` connections."""

    def __init__(self, guards: Guards, *args: Any) -> None:
        """asyncua's binary server with the guards."""
        super().__init__(*args)
        self._guards = guards

    def _make_protocol(self) -> GuardedProtocol:
        return GuardedProtocol(
            self._guards, iserver=self.iserver, policies=self._policies, clients=self.clients,
            closing_tasks=self.closing_tasks, limits=self.limits,
        )  # fmt: skip


class InspectorServer(Server):
    """asyncua's server listening through :class:`GuardedBinaryServer`; the certificate was checked before."""

    def __init__(self, guards: Guards) -> None:
        """A server whose user manager is the guards' access manager."""
        super().__init__(user_manager=guards.access)  # type: ignore[arg-type]  # asyncua's protocol, not a base
        self.guards = guards

    async def start(self) -> None:
        """asyncua's start with the guarded listener (the certificate check is ``certificate_problems``)."""
        await self._setup_server_nodes()
        await self.iserver.start()
        try:
            host, port = self._get_bind_socket_info()
            self.bserver = GuardedBinaryServer(self.guards, self.iserver, host, port, self.limits)
            self.bserver.set_policies(self._policies)
            await self.bserver.start()
        except Exception:
            await self.iserver.stop()
            raise

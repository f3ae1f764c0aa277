"""Who may open an OPC UA session: users from a file of password hashes, trusted client certificates.

A password is checked with the same work whether the user exists or not (an unknown user is checked against a
dummy hash), off the server's event loop (:meth:`AccessManager.check_user` runs on a worker thread, see
``inspector.plc.stack``); failed logins are counted by reason and slow down the address they come from.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from asyncua.crypto import uacrypto
from asyncua.crypto.permission_rules import User, UserRole
from prometheus_client import CollectorRegistry, Counter

from inspector.core import passwords
from inspector.core.passwords import UsersError

FAILURE_WINDOW_S = 600.0  # failed logins older than this no longer slow an address down
FIRST_DELAY_S = 0.25  # the first slowed login waits this long; each further failure doubles it
MAX_ADDRESSES = 4096  # client addresses whose failures are remembered, at most (the oldest are forgotten)
FAIL_UNKNOWN_USER = "unknown_user"
FAIL_WRONG_PASSWORD = "wrong_password"
FAIL_ANONYMOUS = "anonymous"
FAIL_CERTIFICATE = "certificate"
LOGIN_FAILURE_REASONS = (FAIL_UNKNOWN_USER, FAIL_WRONG_PASSWORD, FAIL_ANONYMOUS, FAIL_CERTIFICATE)


@dataclass(frozen=True)
class LoginAttempt:
    """One ActivateSession as the server's stack saw it before asyncua asks :meth:`AccessManager.get_user`:
    the client's address and, for a user name token, the verdict of the password check already made."""

    address: str
    anonymous: bool = False  # an anonymous token (asyncua then passes the channel's certificate, if any)
    username: str | None = None
    password: str | None = None
    password_ok: bool | None = None


ATTEMPT: contextvars.ContextVar[LoginAttempt | None] = contextvars.ContextVar("opcua_login", default=None)
"""The attempt being activated (set by ``inspector.plc.stack`` around asyncua's ActivateSession handling)."""


def read_users(path: Path) -> dict[str, str]:
    """The ``[users]`` table of the OPC UA users file: user name -> password hash.

    Raises:
        UsersError: the file is missing, not TOML, or a value is not a hash (the user is named, never the hash).
    """
    return passwords.read_users(path, "opcua.users_file")


class LoginGuard:
    """Failed logins: counted by reason (``inspector_opcua_login_failures_total``), logged, and remembered per
    client address, whose logins wait (doubling, up to ``max_delay_s``) once it failed ``free_failures`` times
    within FAILURE_WINDOW_S. A successful login forgets the address's failures. Thread-safe."""

    def __init__(
        self,
        free_failures: int,
        max_delay_s: float,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Count on ``registry`` (a private one when None)."""
        self._free = free_failures
        self._max_delay_s = max_delay_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self.counter = Counter(
            "inspector_opcua_login_failures_total",
            "OPC UA logins refused, by reason (unknown_user, wrong_password, anonymous, certificate).",
            ["reason"],
            registry=registry if registry is not None else CollectorRegistry(),
        )
        for reason in LOGIN_FAILURE_REASONS:
            self.counter.labels(reason=reason)
        self._log = structlog.stdlib.get_logger(__name__)

    def _recent(self, address: str) -> deque[float]:
        times = self._failures.setdefault(address, deque())
        horizon = self._clock() - FAILURE_WINDOW_S
        while times and times[0] < horizon:
            times.popleft()
        return times

    def delay_s(self, address: str) -> float:
        """How long a login from ``address`` waits before it is checked (0: not slowed)."""
        with self._lock:
            over = len(self._recent(address)) - self._free
        return 0.0 if over < 0 else min(self._max_delay_s, FIRST_DELAY_S * 2.0**over)

    def failed(self, address: str, reason: str, user: str | None = None) -> None:
        """Count, log and remember one refused login."""
        self.counter.labels(reason=reason).inc()
        with self._lock:
            self._recent(address).append(self._clock())
            self._failures.move_to_end(address)
            while len(self._failures) > MAX_ADDRESSES:
                self._failures.popitem(last=False)
            count = len(self._failures[address])
        self._log.warning("opcua_login_refused", address=address, reason=reason, user=user, failures=count)

    def succeeded(self, address: str) -> None:
        """Forget the address's failures."""
        with self._lock:
            self._failures.pop(address, None)


class AccessManager:
    """asyncua's user manager: a known user with the right password, or a trusted client certificate."""

    def __init__(
        self,
        users: dict[str, str],
        certificates: list[bytes],
        allow_anonymous: bool,
        guard: LoginGuard | None = None,
    ) -> None:
        """Users (name -> hash), trusted client certificates (DER), whether anonymous sessions are allowed, and
        where failures are counted."""
        self._users = users
        self._certificates = certificates
        self._anonymous = allow_anonymous
        self._guard = guard
        # Unknown users are checked against this, so they cost what a known user costs.
        self._dummy = passwords.dummy_hash(users)

    def check_user(self, username: str, password: str) -> bool:
        """True for a known user with the right password; one hash computation either way (slow: not on a loop)."""
        stored = self._users.get(username)
        ok = passwords.check_password(password, stored if stored is not None else self._dummy)
        return ok and stored is not None

    def knows(self, username: str) -> bool:
        """Whether the user is in the users file (for counting the reason of a failure, after the check)."""
        return username in self._users

    @classmethod
    async def load(
        cls,
        users_file: Path | None,
        certificates: list[Path],
        allow_anonymous: bool,
        guard: LoginGuard | None = None,
    ) -> AccessManager:
        """Read the users file and the certificate files.

        Raises:
            UsersError: a file that cannot be read.
        """
        users = read_users(users_file) if users_file is not None else {}
        ders = []
        for path in certificates:
            try:
                ders.append(uacrypto.der_from_x509(await uacrypto.load_certificate(path)))  # type: ignore[no-untyped-call]
            except (OSError, ValueError) as exc:
                raise UsersError(f"opcua.client_certificates {path}: {exc}") from None
        return cls(users, ders, allow_anonymous, guard)

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:  # fmt: skip
        """The session's user, or None (refused). A password already checked off the loop (:data:`ATTEMPT`) is
        not checked again."""
        attempt = ATTEMPT.get()
        if username is not None:
            if attempt is not None and attempt.username == username and attempt.password == password:
                ok = bool(attempt.password_ok)
            else:  # not seen by the stack (a direct call): the same check, here
                ok = self.check_user(username, password or "")
            reason = FAIL_WRONG_PASSWORD if self.knows(username) else FAIL_UNKNOWN_USER
            return self._outcome(User(role=UserRole.User, name=username) if ok else None, reason, username)
        if certificate and not (attempt is not None and attempt.anonymous):  # the X509 token's certificate
            der = certificate if isinstance(certificate, bytes) else uacrypto.der_from_x509(certificate)  # type: ignore[no-untyped-call]
            trusted = der in self._certificates
            return self._outcome(
                User(role=UserRole.User, name="certificate") if trusted else None, FAIL_CERTIFICATE
            )
        return self._outcome(
            User(role=UserRole.User, name="anonymous") if self._anonymous else None, FAIL_ANONYMOUS
        )

    def _outcome(self, user: User | None, reason: str, name: str | None = None) -> User | None:
        attempt = ATTEMPT.get()
        if self._guard is not None:
            address = attempt.address if attempt is not None else "unknown"
            if user is None:
                self._guard.failed(address, reason, name)
            else:
                self._guard.succeeded(address)
        return user

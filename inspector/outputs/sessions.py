"""Who may use the review page: users with roles from a file, logins with lock-out, sessions with idle logout."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from inspector.core import passwords
from inspector.core.passwords import UsersError

Role = Literal["operator", "engineer"]
ROLES: tuple[Role, ...] = ("operator", "engineer")
TOKEN_BYTES = 32
FAIL_UNKNOWN_USER = "unknown_user"
FAIL_WRONG_PASSWORD = "wrong_password"
FAIL_LOCKED_OUT = "locked_out"
LOGIN_FAILURE_REASONS = (FAIL_UNKNOWN_USER, FAIL_WRONG_PASSWORD, FAIL_LOCKED_OUT)


def read_review_users(path: Path) -> dict[str, tuple[str, Role]]:
    """User name -> (password hash, role) from ``[users]`` and ``[roles]`` of a TOML file.

    Raises:
        UsersError: the file, a hash or a role cannot be used (naming ``review.users_file`` and the user).
    """
    field_name = "review.users_file"
    hashes = passwords.read_users(path, field_name)
    roles = passwords.read_users_table(path, field_name, "roles")
    users: dict[str, tuple[str, Role]] = {}
    for name, stored in hashes.items():
        role = roles.get(name)
        if role not in ROLES:
            raise UsersError(
                f"{field_name} {path}: user {name!r} needs a role in [roles]: one of {list(ROLES)}"
            )
        users[name] = (stored, role)
    return users


@dataclass
class Session:
    """A logged-in user: their role, the CSRF token their page sends with every POST, their last request."""

    user: str
    role: Role
    csrf: str
    last_seen: float


@dataclass(frozen=True)
class LoginResult:
    """A login: the session's cookie token and session, or why it failed."""

    token: str | None = None
    session: Session | None = None
    failure: str | None = None


@dataclass
class _Failures:
    times: list[float] = field(default_factory=list)
    locked_until: float = 0.0


class Sessions:
    """Logins (constant work for unknown users, lock-out after repeated failures of a user) and sessions (idle
    logout). Thread-safe; :meth:`login` does the slow hash and belongs on a worker thread."""

    def __init__(
        self,
        users: dict[str, tuple[str, Role]],
        idle_s: float,
        lockout_failures: int,
        lockout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Serve ``users``; ``lockout_failures`` failed logins of a user within ``lockout_s`` lock it out."""
        self._users = users
        self._dummy = passwords.dummy_hash({name: h for name, (h, _) in users.items()})
        self._idle_s = idle_s
        self._max_failures = lockout_failures
        self._lockout_s = lockout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self._failures: dict[str, _Failures] = {}

    def login(self, user: str, password: str) -> LoginResult:
        """Check a password (the same work whether the user exists or not); open a session when it matches."""
        now = self._clock()
        with self._lock:
            failures = self._failures.get(user)
            if failures is not None and failures.locked_until > now:
                return LoginResult(failure=FAIL_LOCKED_OUT)
        stored, role = self._users.get(user, (self._dummy, "operator"))
        ok = passwords.check_password(password, stored) and user in self._users
        with self._lock:
            if not ok:
                return LoginResult(failure=self._failed(user, now))
            self._failures.pop(user, None)
            token = secrets.token_urlsafe(TOKEN_BYTES)
            session = Session(user, role, secrets.token_urlsafe(TOKEN_BYTES), now)
            self._sessions[token] = session
            return LoginResult(token, session)

    def _failed(self, user: str, now: float) -> str:
        record = self._failures.setdefault(user, _Failures())
        record.times = [t for t in record.times if now - t < self._lockout_s] + [now]
        if len(record.times) >= self._max_failures:
            record.locked_until, record.times = now + self._lockout_s, []
        return FAIL_WRONG_PASSWORD if user in self._users else FAIL_UNKNOWN_USER

    def get(self, token: str | None) -> Session | None:
        """The session of a cookie token, renewed; None when unknown or idle past ``idle_s`` (then ended)."""
        if not token:
            return None
        now = self._clock()
        with self._lock:
            session = self._sessions.get(token)
            if session is None:
                return None
            if now - session.last_seen > self._idle_s:
                del self._sessions[token]
                return None
            session.last_seen = now
            return session

    def logout(self, token: str | None) -> Session | None:
        """End a session; returns it (None when there was none)."""
        with self._lock:
            return self._sessions.pop(token or "", None)

"""Tests for inspector.outputs.sessions: roles from the users file, lock-out, idle logout, unknown users."""

from __future__ import annotations

from pathlib import Path

import pytest

from inspector.core import passwords
from inspector.core.passwords import UsersError, hash_password
from inspector.outputs.sessions import (
    FAIL_LOCKED_OUT,
    FAIL_UNKNOWN_USER,
    FAIL_WRONG_PASSWORD,
    Sessions,
    read_review_users,
)

FAST = 1000


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _sessions(clock: Clock) -> Sessions:
    users = {"olga": (hash_password("operator-pass", FAST), "operator"),
             "erik": (hash_password("engineer-pass", FAST), "engineer")}  # fmt: skip
    return Sessions(users, idle_s=60.0, lockout_failures=3, lockout_s=300.0, clock=clock)  # type: ignore[arg-type]


def test_a_login_opens_a_session_with_a_role_and_a_csrf_token_that_ends_when_idle_or_logged_out() -> None:
    clock = Clock()
    sessions = _sessions(clock)
    result = sessions.login("erik", "engineer-pass")
    assert result.session is not None and result.token and result.session.role == "engineer"
    assert len(result.session.csrf) > 30 and result.session.csrf != result.token
    clock.now = 59.0
    assert sessions.get(result.token) is result.session  # renewed
    clock.now = 59.0 + 61.0
    assert sessions.get(result.token) is None and sessions.get(result.token) is None
    again = sessions.login("olga", "operator-pass")
    assert sessions.logout(again.token) is again.session and sessions.get(again.token) is None


def test_repeated_failures_lock_a_user_out_for_a_while_and_unknown_users_cost_a_hash_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    sessions = _sessions(clock)
    checked: list[str] = []
    real = passwords.check_password

    def counting(password: str, stored: str) -> bool:
        checked.append(stored)
        return real(password, stored)

    monkeypatch.setattr(passwords, "check_password", counting)
    assert sessions.login("nobody", "whatever-pass").failure == FAIL_UNKNOWN_USER and len(checked) == 1
    assert [sessions.login("olga", "wrong").failure for _ in range(3)] == [FAIL_WRONG_PASSWORD] * 3
    assert sessions.login("olga", "operator-pass").failure == FAIL_LOCKED_OUT  # even the right password
    assert sessions.login("erik", "engineer-pass").session is not None  # another user is not locked
    clock.now = 301.0
    assert sessions.login("olga", "operator-pass").session is not None


def test_the_users_file_needs_a_role_for_every_user(tmp_path: Path) -> None:
    path = tmp_path / "users.toml"
    path.write_text(f'[users]\nolga = "{hash_password("operator-pass", FAST)}"\n[roles]\nolga = "boss"\n')
    with pytest.raises(UsersError, match="review.users_file .*user 'olga' needs a role in \\[roles\\]"):
        read_review_users(path)
    path.write_text(f'[users]\nolga = "{hash_password("operator-pass", FAST)}"\n[roles]\nolga = "operator"\n')
    assert read_review_users(path)["olga"][1] == "operator"

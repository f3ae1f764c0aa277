"""Who may open an OPC UA session: the users file, password hashes, certificates."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from inspector.core.passwords import UsersError, check_password, hash_password
from inspector.plc.users import (
    ATTEMPT,
    FAILURE_WINDOW_S,
    FIRST_DELAY_S,
    AccessManager,
    LoginAttempt,
    LoginGuard,
    read_users,
)

FAST = 1000  # iterations in tests


def test_a_hash_checks_its_password_only_and_is_salted() -> None:
    first, second = hash_password("correct horse", FAST), hash_password("correct horse", FAST)
    assert first != second, "two hashes of one password are equal: no salt"
    assert check_password("correct horse", first) and check_password("correct horse", second)
    assert not check_password("correct hors", first)
    assert not check_password("correct horse", "md5$1$x$y") and not check_password("x", "garbage")


def test_a_short_password_is_refused() -> None:
    with pytest.raises(UsersError, match="at least 8"):
        hash_password("short")


def test_users_file_errors_name_the_file_and_the_user_never_the_hash(tmp_path: Path) -> None:
    path = tmp_path / "users.toml"
    path.write_text('[users]\nplc = "plaintext-password"\n', encoding="utf-8")
    with pytest.raises(UsersError) as info:
        read_users(path)
    assert str(path) in str(info.value) and "'plc'" in str(info.value)
    assert "plaintext-password" not in str(info.value)
    path.write_text("plc = 1\n", encoding="utf-8")
    with pytest.raises(UsersError, match="no \\[users\\] table"):
        read_users(path)
    with pytest.raises(UsersError, match="missing.toml"):
        read_users(tmp_path / "missing.toml")


def test_the_access_manager_admits_known_users_trusted_certificates_and_anonymous_only_when_allowed() -> None:
    users = {"plc": hash_password("right-password", FAST)}
    closed = AccessManager(users, [b"trusted-der"], allow_anonymous=False)
    assert closed.get_user(None, "plc", "right-password") is not None
    assert closed.get_user(None, "plc", "wrong-password") is None
    assert closed.get_user(None, "other", "right-password") is None
    assert closed.get_user(None, certificate=b"trusted-der") is not None
    assert closed.get_user(None, certificate=b"other-der") is None
    assert closed.get_user(None) is None and closed.get_user(None, certificate=b"") is None
    assert AccessManager(users, [], allow_anonymous=True).get_user(None) is not None


def test_an_unknown_user_costs_one_hash_like_a_known_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from inspector.core import passwords

    manager = AccessManager({"plc": hash_password("right-password", FAST)}, [], allow_anonymous=False)
    checked: list[str] = []
    real = passwords.check_password

    def counting(password: str, stored: str) -> bool:
        checked.append(stored.split("$")[1])
        return real(password, stored)

    monkeypatch.setattr(passwords, "check_password", counting)
    assert manager.check_user("plc", "right-password") and not manager.check_user("plc", "wrong-password")
    assert not manager.check_user("nobody", "right-password")
    assert checked == [str(FAST)] * 3, "an unknown user was not checked against a hash of the same cost"


def test_failed_logins_are_counted_by_reason_and_slow_their_address_down_until_one_succeeds() -> None:
    now = [0.0]
    registry = CollectorRegistry()
    guard = LoginGuard(2, 1.0, registry, clock=lambda: now[0])
    manager = AccessManager({"plc": hash_password("right-password", FAST)}, [b"der"], False, guard)
    token = ATTEMPT.set(LoginAttempt("10.0.0.7"))
    try:
        assert manager.get_user(None, "nobody", "x") is None
        assert manager.get_user(None, "plc", "wrong") is None
        assert guard.delay_s("10.0.0.7") == FIRST_DELAY_S and guard.delay_s("10.0.0.8") == 0.0
        assert manager.get_user(None, certificate=b"other") is None
        assert manager.get_user(None) is None
        assert guard.delay_s("10.0.0.7") == 1.0, "the delay is not capped at login_slowdown_max_s"
        now[0] += FAILURE_WINDOW_S + 1
        assert guard.delay_s("10.0.0.7") == 0.0, "failures older than the window still count"
        manager.get_user(None, "plc", "wrong")
        manager.get_user(None, "plc", "wrong")
        assert guard.delay_s("10.0.0.7") > 0 and manager.get_user(None, "plc", "right-password") is not None
        assert guard.delay_s("10.0.0.7") == 0.0
    finally:
        ATTEMPT.reset(token)
    values = {r: registry.get_sample_value("inspector_opcua_login_failures_total", {"reason": r}) for r in
              ("unknown_user", "wrong_password", "certificate", "anonymous")}  # fmt: skip
    assert values == {"unknown_user": 1, "wrong_password": 3, "certificate": 1, "anonymous": 1}


def test_a_password_checked_off_the_loop_is_not_checked_again_and_anonymous_tokens_stay_anonymous() -> None:
    manager = AccessManager({"plc": "pbkdf2_sha256$1$AAAA$AAAA"}, [b"der"], allow_anonymous=True)
    token = ATTEMPT.set(LoginAttempt("a", username="plc", password="p", password_ok=True))
    try:
        assert manager.get_user(None, "plc", "p") is not None, "the stack's verdict was not used"
    finally:
        ATTEMPT.reset(token)
    token = ATTEMPT.set(LoginAttempt("a", anonymous=True))
    try:
        user = manager.get_user(None, certificate=b"channel-der")  # asyncua passes the channel's certificate
        assert user is not None and user.name == "anonymous"
    finally:
        ATTEMPT.reset(token)

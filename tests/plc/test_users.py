"""Who may open an OPC UA session: the users file, password hashes, certificates."""

from __future__ import annotations

from pathlib import Path

import pytest

from inspector.plc.users import AccessManager, UsersError, check_password, hash_password, read_users

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

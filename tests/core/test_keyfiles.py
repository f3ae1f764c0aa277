"""Key files: bounded reads, private secrets, never overwritten, environment variables expanded."""

from __future__ import annotations

from pathlib import Path

import pytest

from inspector.core.keyfiles import MAX_KEY_FILE_BYTES, KeyFileError, key_path, read_key_file, write_key_file


def test_written_keys_have_private_or_public_modes_and_are_never_replaced(tmp_path: Path) -> None:
    write_key_file(tmp_path / "a.secret", b"s", secret=True)
    write_key_file(tmp_path / "a.pub", b"p", secret=False)
    assert (tmp_path / "a.secret").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "a.pub").stat().st_mode & 0o777 == 0o644
    with pytest.raises(KeyFileError, match="exists already"):
        write_key_file(tmp_path / "a.secret", b"other", secret=True)
    assert read_key_file(tmp_path / "a.secret", secret=True) == b"s"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pub", "a.secret"]


def test_reading_refuses_missing_oversized_non_regular_and_shared_secret_files(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="file not found"):
        read_key_file(tmp_path / "absent", secret=False)
    big = tmp_path / "big"
    big.write_bytes(b"x" * (MAX_KEY_FILE_BYTES + 1))
    with pytest.raises(KeyFileError, match="larger than any key file"):
        read_key_file(big, secret=False)
    with pytest.raises(KeyFileError, match="not a regular file"):
        read_key_file(tmp_path, secret=False)
    shared = tmp_path / "shared"
    shared.write_bytes(b"topsecret")
    shared.chmod(0o640)
    with pytest.raises(KeyFileError) as info:
        read_key_file(shared, secret=True)
    assert "mode 0640" in str(info.value) and "topsecret" not in str(info.value)
    assert read_key_file(shared, secret=False) == b"topsecret"


def test_paths_expand_the_credentials_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    write_key_file(tmp_path / "server.key", b"k", secret=False)
    assert key_path("${CREDENTIALS_DIRECTORY}/server.key") == tmp_path / "server.key"
    assert read_key_file("${CREDENTIALS_DIRECTORY}/server.key", secret=False) == b"k"

"""``inspector keys generate [--curve]`` and ``inspector gallery sign``: files, modes, and no secret printed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import zmq.auth

from inspector.bus.curve import load_keypair, load_public_key
from inspector.cli.main import main
from inspector.core.names import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK
from inspector.model.gallery import read_gallery_hash
from inspector.model.signing import load_signer, signature_path, verify_gallery
from tests.support import SyntheticGallery


def test_keys_generate_writes_a_private_secret_and_a_public_file_and_prints_only_the_fingerprint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "generate", str(tmp_path / "plant")]) == EXIT_OK
    out = capsys.readouterr().out
    secret, public = tmp_path / "plant.ed25519", tmp_path / "plant.ed25519.pub"
    assert secret.stat().st_mode & 0o777 == 0o600 and public.stat().st_mode & 0o777 == 0o644
    assert load_signer(public).fingerprint in out
    body = "".join(secret.read_text(encoding="utf-8").splitlines()[1:-1])
    assert body not in out
    assert main(["keys", "generate", str(tmp_path / "plant")]) == EXIT_FAILURE
    assert "exists already" in capsys.readouterr().err


def test_keys_generate_curve_writes_zeromq_certificates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "generate", "--curve", str(tmp_path / "server")]) == EXIT_OK
    out = capsys.readouterr().out
    secret, public = tmp_path / "server.key_secret", tmp_path / "server.key"
    pair = load_keypair(secret)
    assert load_public_key(public) == pair.public and pair.public.decode() in out
    assert pair.secret.decode() not in out and pair.secret.decode() not in repr(pair)
    assert zmq.auth.load_certificate(str(secret)) == (pair.public, pair.secret)  # readable by pyzmq too
    assert zmq.auth.load_certificate(str(public)) == (pair.public, None)
    assert secret.stat().st_mode & 0o777 == 0o600


def test_gallery_sign_writes_a_detached_signature_that_verifies(
    tmp_path: Path, synthetic_gallery: SyntheticGallery, capsys: pytest.CaptureFixture[str]
) -> None:
    gallery = tmp_path / "g.safetensors"
    shutil.copyfile(synthetic_gallery.path, gallery)
    assert main(["keys", "generate", str(tmp_path / "plant")]) == EXIT_OK
    assert main(["gallery", "sign", "--key", str(tmp_path / "plant.ed25519"), str(gallery)]) == EXIT_OK
    signer = load_signer(tmp_path / "plant.ed25519.pub")
    assert signer.fingerprint in capsys.readouterr().out
    assert verify_gallery(gallery, read_gallery_hash(gallery), [signer]) == signer
    assert signature_path(gallery).exists()


def test_gallery_sign_refuses_a_modified_gallery_and_writes_no_signature(
    tmp_path: Path, synthetic_gallery: SyntheticGallery, capsys: pytest.CaptureFixture[str]
) -> None:
    gallery = tmp_path / "g.safetensors"
    data = bytearray(synthetic_gallery.path.read_bytes())
    data[-3] ^= 0x10
    gallery.write_bytes(bytes(data))
    assert main(["keys", "generate", str(tmp_path / "plant")]) == EXIT_OK
    assert main(["gallery", "sign", "--key", str(tmp_path / "plant.ed25519"), str(gallery)]) == EXIT_FAILURE
    assert "content hash mismatch" in capsys.readouterr().err
    assert not signature_path(gallery).exists()


def test_check_config_refuses_an_unsigned_gallery_and_accepts_a_signed_one(
    tmp_path: Path, synthetic_gallery: SyntheticGallery, capsys: pytest.CaptureFixture[str]
) -> None:
    gallery = tmp_path / "g.safetensors"
    shutil.copyfile(synthetic_gallery.path, gallery)
    assert main(["keys", "generate", str(tmp_path / "plant")]) == EXIT_OK
    config = tmp_path / "inspector.toml"
    config.write_text(
        f'[[cameras]]\nname = "cam1"\nsource = "0"\n[worker]\ngallery = "{gallery}"\n'
        f'[security]\ngallery_signers = ["{tmp_path / "plant.ed25519.pub"}"]\n',
        encoding="utf-8",
    )
    capsys.readouterr()
    assert main(["check-config", str(config)]) == EXIT_CONFIG
    assert f"worker.gallery: gallery {gallery}: unsigned" in capsys.readouterr().err
    assert main(["gallery", "sign", "--key", str(tmp_path / "plant.ed25519"), str(gallery)]) == EXIT_OK
    assert main(["check-config", str(config)]) == EXIT_OK

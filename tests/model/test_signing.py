"""Detached Ed25519 gallery signatures: only a gallery signed by an allowed key, unchanged since, is accepted."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from inspector.core.keyfiles import KeyFileError
from inspector.model.gallery import load_gallery, save_gallery, update_calibration
from inspector.model.signing import (
    SignatureError,
    Signer,
    generate_keypair,
    load_signer,
    load_signers,
    sign_gallery,
    signature_path,
    verify_gallery,
)
from tests.model.test_gallery import _calibration, _features, _manifest


@pytest.fixture
def gallery(tmp_path: Path) -> Path:
    path = tmp_path / "g.safetensors"
    pooled, stages = _features()
    save_gallery(path, pooled, stages, _manifest())
    update_calibration(path, _calibration())
    return path


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, tuple[Path, Signer]]:
    """Two key pairs: "plant" (allowed) and "stranger"; name -> (secret file, signer)."""
    out = {}
    for name in ("plant", "stranger"):
        secret, public, fingerprint = generate_keypair(tmp_path / name)
        signer = load_signer(public)
        assert signer.fingerprint == fingerprint
        out[name] = (secret, signer)
    return out


def _sign(gallery: Path, secret: Path) -> Path:
    return sign_gallery(gallery, load_gallery(gallery).sha256, secret)[0]


def _refused(gallery: Path, signers: list[Signer]) -> str:
    with pytest.raises(SignatureError) as info:
        verify_gallery(gallery, load_gallery(gallery).sha256, signers)
    assert str(gallery) in str(info.value)
    return info.value.reason


def test_a_gallery_signed_by_an_allowed_key_is_accepted_naming_the_key(
    gallery: Path, keys: dict[str, tuple[Path, Signer]]
) -> None:
    secret, plant = keys["plant"]
    assert _sign(gallery, secret) == signature_path(gallery) == gallery.with_name("g.safetensors.sig")
    signer = verify_gallery(gallery, load_gallery(gallery).sha256, [keys["stranger"][1], plant])
    assert signer.fingerprint == plant.fingerprint and signer.fingerprint.startswith("ed25519:")
    assert secret.read_text(encoding="utf-8") not in signature_path(gallery).read_text(encoding="utf-8")


def test_an_unsigned_gallery_is_refused(gallery: Path, keys: dict[str, tuple[Path, Signer]]) -> None:
    reason = _refused(gallery, [keys["plant"][1]])
    assert reason.startswith("unsigned: no signature file g.safetensors.sig")


def test_a_gallery_signed_by_an_unknown_key_is_refused(
    gallery: Path, keys: dict[str, tuple[Path, Signer]]
) -> None:
    _sign(gallery, keys["stranger"][0])
    reason = _refused(gallery, [keys["plant"][1]])
    assert (
        reason
        == f"signed by {keys['stranger'][1].fingerprint}, not an allowed signer ({keys['plant'][1].fingerprint})"
    )


def test_a_gallery_changed_after_signing_is_refused(
    gallery: Path, keys: dict[str, tuple[Path, Signer]]
) -> None:
    _sign(gallery, keys["plant"][0])
    before = load_gallery(gallery).sha256
    recalibrated = _calibration().model_copy(update={"created_at": "2024-06-01T00:00:00Z"})
    update_calibration(gallery, recalibrated)  # a legitimate rewrite, but not the signed content
    reason = _refused(gallery, [keys["plant"][1]])
    assert reason.startswith(f"signature is for gallery {before[:12]}") and "changed after signing" in reason


def test_a_signature_copied_onto_other_content_or_forged_is_refused(
    gallery: Path, keys: dict[str, tuple[Path, Signer]]
) -> None:
    sig = _sign(gallery, keys["plant"][0])
    doc = json.loads(sig.read_text(encoding="utf-8"))
    update_calibration(gallery, _calibration().model_copy(update={"created_at": "2024-06-01T00:00:00Z"}))
    doc["gallery_sha256"] = load_gallery(gallery).sha256  # claims the new content with the old signature
    sig.write_text(json.dumps(doc), encoding="utf-8")
    assert (
        _refused(gallery, [keys["plant"][1]])
        == f"invalid signature (claimed signer {keys['plant'][1].fingerprint})"
    )
    doc["signature"] = base64.b64encode(b"\0" * 64).decode()
    sig.write_text(json.dumps(doc), encoding="utf-8")
    assert _refused(gallery, [keys["plant"][1]]).startswith("invalid signature")
    sig.write_text("not json", encoding="utf-8")
    assert "is not a inspector-gallery-signature-v1 document" in _refused(gallery, [keys["plant"][1]])


def test_signer_files_that_are_not_ed25519_public_keys_are_refused_naming_them(
    tmp_path: Path, keys: dict[str, tuple[Path, Signer]]
) -> None:
    secret = keys["plant"][0]
    with pytest.raises(KeyFileError, match=f"key file {secret}: not a PEM public key"):
        load_signers([secret])
    with pytest.raises(KeyFileError, match="file not found"):
        load_signers([tmp_path / "absent.pub"])


def test_a_secret_key_others_can_read_is_refused(gallery: Path, keys: dict[str, tuple[Path, Signer]]) -> None:
    secret = keys["plant"][0]
    secret.chmod(0o644)
    with pytest.raises(KeyFileError) as info:
        sign_gallery(gallery, load_gallery(gallery).sha256, secret)
    assert "readable by group or others (mode 0644)" in str(info.value)
    assert secret.read_text(encoding="utf-8") not in str(info.value)
    assert not signature_path(gallery).exists()

"""The daemon's gallery loader with ``[security] gallery_signers``: start-up and every reload accept only a
gallery signed by an allowed key, and say which key signed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import zmq
from prometheus_client import CollectorRegistry

from inspector.config.bus import BusConfig
from inspector.config.camera import CameraConfig
from inspector.config.metrics import MetricsConfig
from inspector.config.root import InspectorConfig
from inspector.config.security import SecurityConfig
from inspector.config.worker import WorkerConfig
from inspector.core.keyfiles import KeyFileError
from inspector.daemon.lifecycle import Daemon
from inspector.daemon.products import product_loader
from inspector.model.engine import BackboneCache
from inspector.model.gallery import read_gallery_hash
from inspector.model.signing import SignatureError, generate_keypair, sign_gallery
from inspector.ops.sdnotify import SdNotifier
from tests.support import LabelledVideo, SyntheticGallery, free_port, load_registry


def _config(gallery: Path, signers: list[Path], camera: CameraConfig | None = None) -> InspectorConfig:
    return InspectorConfig(
        cameras=[camera or CameraConfig(name="line", source="0")],
        worker=WorkerConfig(gallery=gallery),
        bus=BusConfig(bind=f"tcp://127.0.0.1:{free_port()}"),
        metrics=MetricsConfig(port=0),
        security=SecurityConfig(gallery_signers=signers),
    )


@pytest.fixture
def signed(tmp_path: Path, synthetic_gallery: SyntheticGallery) -> tuple[Path, Path, Path, str]:
    """(a copy of the test gallery signed by "plant", plant's secret and public files, plant's fingerprint)."""
    gallery = tmp_path / "signed.safetensors"
    shutil.copyfile(synthetic_gallery.path, gallery)
    secret, public, fingerprint = generate_keypair(tmp_path / "plant")
    sign_gallery(gallery, read_gallery_hash(gallery), secret)
    return gallery, secret, public, fingerprint


def test_an_allowed_signature_is_accepted_and_named_then_an_unsigned_reload_is_refused_keeping_the_old(
    tmp_path: Path, signed: tuple[Path, Path, Path, str]
) -> None:
    gallery, _, public, fingerprint = signed
    config = _config(gallery, [public])
    loader = product_loader(config, BackboneCache())
    registry = load_registry(config)
    (product,) = registry.products
    before = registry.info(product)
    assert before.signed_by == fingerprint and before.gallery_hash == read_gallery_hash(gallery)
    gallery.with_name(gallery.name + ".sig").unlink()
    (result,) = registry.reload(None, loader)
    assert not result.ok and "unsigned: no signature file signed.safetensors.sig" in result.reason
    assert result.reason.startswith("SignatureError: gallery ") and str(gallery) in result.reason
    assert registry.info(product) == before  # the signed gallery stays in service


def test_a_signature_by_another_key_is_refused_at_reload(
    tmp_path: Path, signed: tuple[Path, Path, Path, str]
) -> None:
    gallery, _, public, _ = signed
    config = _config(gallery, [public])
    registry = load_registry(config)
    stranger, _, stranger_fp = generate_keypair(tmp_path / "stranger")
    sign_gallery(gallery, read_gallery_hash(gallery), stranger)
    (result,) = registry.reload(None, product_loader(config, BackboneCache()))
    assert not result.ok and f"signed by {stranger_fp}, not an allowed signer" in result.reason


def test_without_signers_nothing_is_checked_and_no_signer_is_named(
    synthetic_gallery: SyntheticGallery,
) -> None:
    registry = load_registry(_config(synthetic_gallery.path, []))
    assert registry.info(registry.products[0]).signed_by is None


def test_an_unusable_signer_file_is_refused_naming_it(
    tmp_path: Path, synthetic_gallery: SyntheticGallery
) -> None:
    with pytest.raises(KeyFileError, match=f"key file {tmp_path / 'absent.pub'}: file not found"):
        product_loader(_config(synthetic_gallery.path, [tmp_path / "absent.pub"]), BackboneCache())


@pytest.mark.parametrize("case", ["unsigned", "unknown key", "edited after signing"])
def test_the_daemon_refuses_a_gallery_without_an_allowed_valid_signature_before_ready(
    tmp_path: Path, signed: tuple[Path, Path, Path, str], labelled_video: LabelledVideo, case: str
) -> None:
    gallery, _, public, _ = signed
    if case == "unsigned":
        gallery.with_name(gallery.name + ".sig").unlink()
    elif case == "unknown key":
        stranger, _, _ = generate_keypair(tmp_path / "stranger")
        sign_gallery(gallery, read_gallery_hash(gallery), stranger)
    else:
        from inspector.model.gallery import load_gallery, update_calibration

        cal = load_gallery(gallery).manifest.calibration
        assert cal is not None
        update_calibration(gallery, cal.model_copy(update={"created_at": "2030-01-01T00:00:00Z"}))
    video, _ = labelled_video("line", 4, seed=3)
    config = _config(gallery, [public], CameraConfig(name="line", source=str(video)))
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        daemon = Daemon(config, ctx, CollectorRegistry(), SdNotifier({}), {})
        with pytest.raises(SignatureError, match=str(gallery)):
            daemon.run()
        assert not daemon.ready_event.is_set()
    finally:
        ctx.destroy(linger=0)

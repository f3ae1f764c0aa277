"""Shared fixtures of the daemon tests: a small calibrated gallery of synthetic parts and labelled demo videos."""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from inspector.config import CalibrationConfig, ModelConfig
from inspector.demo_daemon import DEMO_MODEL
from inspector.demo_data import write_demo_video, write_good_part_images
from inspector.gallery_build import build_gallery, calibrate_gallery

FRAME_SIDE_PX = 160
GALLERY_IMAGES = 30
GALLERY_SEED = 7
VIDEO_FPS = 10.0
DEFECT_EVERY = 4
# Small and fast on 2 CPU cores: the demo's pinned settings (every setting that moves scores is explicit,
# not left to the engine's defaults, which are tuned for 224 px crops); map_max splits the synthetic parts cleanly.
TEST_MODEL = DEMO_MODEL

LabelledVideo = Callable[..., tuple[Path, list[str | None]]]


@dataclass(frozen=True)
class SyntheticGallery:
    """A calibrated gallery built from known-good demo frames."""

    path: Path
    model: ModelConfig
    content_hash: str


def build_synthetic_gallery(folder: Path, n_images: int, seed: int) -> SyntheticGallery:
    """Build and calibrate a gallery from ``n_images`` good parts of a demo video.

    The good parts go through the same MJPG encoding as the cameras' videos, so the gallery and the live
    frames share one image domain (PNG-only galleries score every JPEG frame a little higher).
    """
    images = write_good_part_images(folder, n_images, VIDEO_FPS, FRAME_SIDE_PX, seed)
    gallery = folder / "gallery.safetensors"
    manifest = build_gallery(images, gallery, TEST_MODEL)
    calibrate_gallery(gallery, TEST_MODEL, CalibrationConfig())
    return SyntheticGallery(gallery, TEST_MODEL, manifest.content_sha256)


@pytest.fixture(scope="session")
def synthetic_gallery(tmp_path_factory: pytest.TempPathFactory) -> SyntheticGallery:
    """The shared test gallery (30 good parts at 160 px, crop 128, map_max), built once per session."""
    return build_synthetic_gallery(tmp_path_factory.mktemp("gallery"), GALLERY_IMAGES, GALLERY_SEED)


@pytest.fixture
def labelled_video(tmp_path: Path) -> LabelledVideo:
    """Factory: ``(name, n_frames, seed, fps=10)`` -> (MJPG video path, per-frame labels; None = good part)."""

    def make(name: str, n_frames: int, seed: int, fps: float = VIDEO_FPS) -> tuple[Path, list[str | None]]:
        path = tmp_path / f"{name}.avi"
        labels = write_demo_video(path, n_frames, fps, DEFECT_EVERY, FRAME_SIDE_PX, seed)
        return path, labels

    return make


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def model_config(**fields: Any) -> ModelConfig:
    """A validated model config: pydantic fills the defaults."""
    return ModelConfig.model_validate(fields)


def calibration_config(**fields: Any) -> CalibrationConfig:
    """A validated calibration config."""
    return CalibrationConfig.model_validate(fields)

"""Shared fixtures of the daemon tests: a small calibrated gallery of synthetic parts and labelled demo videos."""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.config import CalibrationConfig, ModelConfig
from inspector.demo_data import write_demo_video
from inspector.gallery_build import build_gallery, calibrate_gallery

FRAME_SIDE_PX = 160
GALLERY_IMAGES = 30
GALLERY_SEED = 7
VIDEO_FPS = 10.0
DEFECT_EVERY = 4
# Small and fast on 2 CPU cores. Every setting that moves scores is pinned (not left to the engine's
# defaults, which are tuned for larger images): with these, map_max splits the synthetic parts cleanly.
TEST_MODEL = ModelConfig(
    resize_px=160,
    crop_px=128,
    image_score="map_max",
    image_k=5,
    pixel_k=5,
    neighbourhood_px=1,
    stage_fusion="mean",
    blur_sigma_px=4.0,
    stages=(0, 1, 2),
    batch_size=8,
)

LabelledVideo = Callable[..., tuple[Path, list[str | None]]]


@dataclass(frozen=True)
class SyntheticGallery:
    """A calibrated gallery built from known-good demo frames."""

    path: Path
    model: ModelConfig
    content_hash: str


def read_video_frames(path: Path) -> list[np.ndarray]:
    """Every frame of a video file, decoded by OpenCV (BGR)."""
    cap = cv2.VideoCapture(str(path))
    frames: list[np.ndarray] = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(image)
    cap.release()
    return frames


def build_synthetic_gallery(folder: Path, n_images: int, seed: int) -> SyntheticGallery:
    """Build and calibrate a gallery from ``n_images`` good parts of a demo video.

    The good parts go through the same MJPG encoding as the cameras' videos, so the gallery and the live
    frames share one image domain (PNG-only galleries score every JPEG frame a little higher).
    """
    folder.mkdir(parents=True, exist_ok=True)
    video = folder / "good.avi"
    write_demo_video(video, n_images, VIDEO_FPS, n_images + 1, FRAME_SIDE_PX, seed)
    images = []
    for index, frame in enumerate(read_video_frames(video)):
        target = folder / f"good_{index:03d}.png"
        assert cv2.imwrite(str(target), frame)
        images.append(target)
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

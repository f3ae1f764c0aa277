"""Shared fixtures: a small calibrated gallery of synthetic parts, labelled demo videos, parts databases."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from inspector.config.parts import PartsConfig
from inspector.demo.data import write_demo_video
from tests import genicam
from tests.postgres import PostgresServer, missing_reason, running_server
from tests.support import (
    DEFECT_EVERY,
    FRAME_SIDE_PX,
    GALLERY_IMAGES,
    GALLERY_SEED,
    VIDEO_FPS,
    LabelledVideo,
    ScoredLine,
    SyntheticGallery,
    build_synthetic_gallery,
    score_line,
)

SCORED_FRAMES = 8


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


@pytest.fixture(scope="session")
def scored_line(tmp_path_factory: pytest.TempPathFactory, synthetic_gallery: SyntheticGallery) -> ScoredLine:
    """Eight demo frames of camera "cam1" (two defective) scored and stamped as published, once per session."""
    return score_line(
        tmp_path_factory.mktemp("scored"), synthetic_gallery.path, "cam1", SCORED_FRAMES, seed=3
    )


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the session (initdb as user postgres, a free loopback port)."""
    reason = missing_reason()
    if reason is not None:
        pytest.skip(reason)
    folder = Path(tempfile.mkdtemp(prefix="inspector-pg-"))  # under /tmp: user postgres can reach it
    folder.chmod(0o755)
    try:
        yield from running_server(folder / "server")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def parts_db(request: pytest.FixtureRequest, tmp_path: Path) -> PartsConfig:
    """A ``[parts]`` section on an empty database of each backend (the same tests run on both)."""
    if request.param == "sqlite":
        return PartsConfig(url=f"sqlite:///{tmp_path / 'parts.db'}", spool_dir=tmp_path / "spool")
    server: PostgresServer = request.getfixturevalue("postgres")
    return PartsConfig(
        url=server.database(), password_file=server.password_file(tmp_path), spool_dir=tmp_path / "spool"
    )


@pytest.fixture(scope="module")
def fake_camera() -> Iterator[genicam.FakeCamera]:
    """Aravis' fake GigE Vision camera on 127.0.0.1 for one test module, under the host-wide lock."""
    reason = genicam.missing_reason()
    if reason is not None:
        pytest.skip(reason)
    with genicam.running_fake_camera() as camera:
        yield camera

"""Tests for inspector.capture.child: what a folder camera makes of every kind of file it meets, and pacing."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from inspector.capture.child import FILE_FALLBACK_FPS, FOLDER_DEFAULT_FPS, pacing_fps, read_folder_image
from inspector.config.camera import CameraConfig
from tests.badframes import TOO_LARGE, UNDECODABLE, write_bad_frames

DEFAULT_MAX_FRAME_PX = 25_000_000


def test_undecodable_and_oversized_files_give_a_fault_naming_the_file_and_odd_images_become_bgr(
    tmp_path: Path,
) -> None:
    kinds = write_bad_frames(tmp_path)
    for stem in kinds:
        path = tmp_path / f"{stem}.png"
        image, fault = read_folder_image(path, DEFAULT_MAX_FRAME_PX)
        if stem in (*UNDECODABLE, TOO_LARGE):
            assert fault is not None and str(path) in fault, stem
            assert image.size == 0
        else:
            assert fault is None, (stem, fault)
            assert image.dtype.name == "uint8" and image.ndim == 3 and image.shape[2] == 3, stem
    assert "empty (0 bytes)" in (read_folder_image(tmp_path / "a_empty.png", 1)[1] or "")
    assert "max_frame_px=100" in (read_folder_image(tmp_path / "g_normal.png", 100)[1] or "")


def test_a_file_that_vanished_before_it_was_read_is_a_fault_not_a_crash(tmp_path: Path) -> None:
    image, fault = read_folder_image(tmp_path / "gone.png", DEFAULT_MAX_FRAME_PX)
    assert image.size == 0 and fault is not None and "gone.png" in fault


def test_as_fast_as_possible_and_live_sources_are_never_paced_even_with_fps_set() -> None:
    fast = CameraConfig(name="f", source="clip.avi", as_fast_as_possible=True, fps=1.0)
    assert pacing_fps(fast, "file", 30.0) is None
    assert pacing_fps(fast, "folder", None) is None
    for kind in ("device", "url", "gstreamer"):
        assert pacing_fps(CameraConfig(name="live", source="0", fps=5.0), kind, 30.0) is None, kind


def test_files_are_paced_at_fps_else_their_reported_rate_else_the_fallback_and_folders_at_their_default() -> (
    None
):
    assert pacing_fps(CameraConfig(name="a", source="clip.avi", fps=2.5), "file", 30.0) == 2.5
    plain = CameraConfig(name="b", source="clip.avi")
    assert pacing_fps(plain, "file", 30.0) == 30.0
    for absurd in (0.0, -1.0, math.nan, math.inf, 90_000.0, None):
        assert pacing_fps(plain, "file", absurd) == FILE_FALLBACK_FPS, absurd
    assert pacing_fps(plain, "folder", None) == FOLDER_DEFAULT_FPS


@pytest.mark.parametrize("fps", [0.5, 7.0])
def test_a_folder_with_fps_is_paced_at_it(fps: float) -> None:
    assert pacing_fps(CameraConfig(name="d", source="imgs", fps=fps), "folder", None) == fps

"""Tests for inspector.capture.child: what a folder camera makes of every kind of file it meets."""

from __future__ import annotations

from pathlib import Path

from inspector.capture.child import read_folder_image
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

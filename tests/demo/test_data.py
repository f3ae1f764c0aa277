"""Tests for inspector.demo.data: MVTec folders with matching masks, and the labelled MJPG line video."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from inspector.demo.data import write_dataset, write_demo_video
from inspector.demo.parts import DEFECT_TYPES

SIZE_PX = 128
MIN_AREA_FRAC = 0.003
MAX_AREA_FRAC = 0.05


def _png_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _read(path: Path) -> npt.NDArray[np.uint8]:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, f"cannot read {path}"
    return np.asarray(image, dtype=np.uint8)


def test_write_dataset_produces_mvtec_layout_with_matching_masks(tmp_path: Path) -> None:
    base = write_dataset(
        tmp_path, "flange", n_train=4, n_test_good=2, n_test_per_defect=2, size_px=96, seed=3
    )
    assert base == tmp_path / "flange"
    assert _png_names(base / "train" / "good") == ["000.png", "001.png", "002.png", "003.png"]
    assert _png_names(base / "test" / "good") == ["000.png", "001.png"]
    assert sorted(p.name for p in (base / "test").iterdir()) == sorted(["good", *DEFECT_TYPES])
    assert sorted(p.name for p in (base / "ground_truth").iterdir()) == sorted(DEFECT_TYPES)
    for defect in DEFECT_TYPES:
        assert _png_names(base / "test" / defect) == ["000.png", "001.png"]
        assert _png_names(base / "ground_truth" / defect) == ["000_mask.png", "001_mask.png"]
        for idx in range(2):
            img = _read(base / "test" / defect / f"{idx:03d}.png")
            mask = _read(base / "ground_truth" / defect / f"{idx:03d}_mask.png")
            assert img.shape == (96, 96, 3)
            assert mask.shape == img.shape[:2]
            assert set(np.unique(mask).tolist()) == {0, 255}
            assert MIN_AREA_FRAC <= float((mask > 0).mean()) <= MAX_AREA_FRAC


def test_write_dataset_is_deterministic_and_seed_dependent(tmp_path: Path) -> None:
    def small(root: Path, seed: int) -> Path:
        return write_dataset(root, n_train=2, n_test_good=1, n_test_per_defect=1, size_px=64, seed=seed)

    first, second, third = small(tmp_path / "a", 5), small(tmp_path / "b", 5), small(tmp_path / "c", 6)
    files = sorted(p.relative_to(first) for p in first.rglob("*.png"))
    assert len(files) == 2 + 1 + 2 * len(DEFECT_TYPES)
    for rel in files:
        assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel
    assert (first / "train/good/000.png").read_bytes() != (third / "train/good/000.png").read_bytes()


def test_write_dataset_rerun_with_fewer_images_leaves_exact_counts(tmp_path: Path) -> None:
    write_dataset(tmp_path, n_train=3, n_test_good=1, n_test_per_defect=1, size_px=64)
    base = write_dataset(tmp_path, n_train=1, n_test_good=1, n_test_per_defect=1, size_px=64)
    assert _png_names(base / "train" / "good") == ["000.png"]


def test_write_demo_video_reads_back_frame_by_frame_with_labels(tmp_path: Path) -> None:
    path = tmp_path / "demo.avi"
    labels = write_demo_video(path, n_frames=12, fps=10.0, defect_every=4, size_px=128, seed=2)
    expected = [None, None, None, "scratch", None, None, None, "dent", None, None, None, "stain"]
    assert labels == expected
    assert json.loads(Path(f"{path}.labels.json").read_text()) == expected
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened()
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    assert len(frames) == 12
    assert all(f.shape == (128, 128, 3) for f in frames)
    assert not np.array_equal(frames[0], frames[1]), "consecutive parts should vary"


def test_write_demo_video_cycles_through_all_defect_types(tmp_path: Path) -> None:
    path = tmp_path / "cycle.avi"
    labels = write_demo_video(path, n_frames=10, defect_every=2, size_px=64, seed=4)
    assert labels[1::2] == [*DEFECT_TYPES, DEFECT_TYPES[0]]
    assert labels[0::2] == [None] * 5
    cap = cv2.VideoCapture(str(path))
    decoded = 0
    while cap.read()[0]:
        decoded += 1
    cap.release()
    assert decoded == len(labels)


def test_write_demo_video_raises_naming_path_when_writer_cannot_open(tmp_path: Path) -> None:
    bad = tmp_path / "no_such_dir" / "demo.avi"
    with pytest.raises(OSError, match="no_such_dir"):
        write_demo_video(bad, n_frames=2, size_px=64)


def test_write_demo_video_rejects_nonpositive_defect_period(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="defect_every"):
        write_demo_video(tmp_path / "demo.avi", n_frames=2, defect_every=0)

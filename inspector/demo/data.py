"""Synthetic demo data: parts written as MVTec folders (with masks) or as an MJPG line video with labels."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from inspector.demo.parts import DEFECT_TYPES, UInt8Array, render_part


def _write_png(path: Path, image: UInt8Array) -> None:
    """Writes a PNG, raising if OpenCV reports failure."""
    if not cv2.imwrite(str(path), image):
        raise OSError(f"cv2.imwrite failed for {path}")


def _fresh_dir(path: Path) -> None:
    """Creates `path` and removes PNGs left there by an earlier run, so counts stay exact."""
    path.mkdir(parents=True, exist_ok=True)
    for old in path.glob("*.png"):
        old.unlink()


def write_dataset(
    root: Path,
    category: str = "demo_part",
    n_train: int = 60,
    n_test_good: int = 10,
    n_test_per_defect: int = 5,
    size_px: int = 256,
    seed: int = 0,
) -> Path:
    """Writes a synthetic dataset in MVTec AD layout.

    Layout: `<category>/train/good/000.png`, `<category>/test/good/000.png`, `<category>/test/<defect>/000.png`
    and `<category>/ground_truth/<defect>/000_mask.png`. Earlier PNGs in those folders are removed.

    Args:
        root: Folder that receives the category folder.
        category: Name of the category folder.
        n_train: Good training images.
        n_test_good: Good test images.
        n_test_per_defect: Test images per defect type (each with a mask).
        size_px: Image side in pixels.
        seed: Seed; the same seed gives identical files.

    Returns:
        The category folder `root / category`.
    """
    base = Path(root) / category
    splits: list[tuple[Path, Path | None, str | None, int]] = [
        (base / "train" / "good", None, None, n_train),
        (base / "test" / "good", None, None, n_test_good),
    ]
    for name in DEFECT_TYPES:
        splits.append((base / "test" / name, base / "ground_truth" / name, name, n_test_per_defect))
    for split_id, (img_dir, gt_dir, defect, count) in enumerate(splits):
        for folder in (img_dir, gt_dir):
            if folder is not None:
                _fresh_dir(folder)
        for idx in range(count):
            image, mask = render_part(np.random.default_rng([seed, split_id, idx]), size_px, defect)
            _write_png(img_dir / f"{idx:03d}.png", image)
            if gt_dir is not None:
                _write_png(gt_dir / f"{idx:03d}_mask.png", mask)
    return base


def labels_path(video_path: Path) -> Path:
    """Path of the JSON sidecar with per-frame labels: `<video_path>.labels.json`."""
    return Path(f"{video_path}.labels.json")


def write_demo_video(
    path: Path,
    n_frames: int = 60,
    fps: float = 10.0,
    defect_every: int = 4,
    size_px: int = 256,
    seed: int = 1,
) -> list[str | None]:
    """Writes an MJPG .avi of parts passing the camera, with a labels sidecar JSON.

    Frame i is defective when i % defect_every == defect_every - 1; defects cycle through DEFECT_TYPES.

    Args:
        path: Output .avi path (its folder must exist).
        n_frames: Number of frames.
        fps: Frame rate stored in the file.
        defect_every: Period of defective frames (>= 1).
        size_px: Frame side in pixels.
        seed: Seed; the same seed gives the same frames.

    Returns:
        Per-frame labels: None for a good part, else the defect type.

    Raises:
        ValueError: If `defect_every` < 1 or `n_frames` < 0.
        OSError: If the video writer cannot open `path`.
    """
    if defect_every < 1:
        raise ValueError(f"defect_every must be >= 1, got {defect_every}")
    if n_frames < 0:
        raise ValueError(f"n_frames must be >= 0, got {n_frames}")
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (size_px, size_px))
    if not writer.isOpened():
        raise OSError(f"cv2.VideoWriter could not open {path} (MJPG, {size_px}x{size_px} @ {fps} fps)")
    labels: list[str | None] = []
    try:
        for i in range(n_frames):
            label = None
            if i % defect_every == defect_every - 1:
                label = DEFECT_TYPES[(i // defect_every) % len(DEFECT_TYPES)]
            image, _ = render_part(np.random.default_rng([seed, i]), size_px, label)
            writer.write(image)
            labels.append(label)
    finally:
        writer.release()
    labels_path(path).write_text(json.dumps(labels))
    return labels


def read_video_frames(path: Path) -> list[UInt8Array]:
    """Every frame of a video file, decoded by OpenCV (BGR)."""
    cap = cv2.VideoCapture(str(path))
    frames: list[UInt8Array] = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(np.asarray(image, dtype=np.uint8))
    cap.release()
    return frames


def write_good_part_images(folder: Path, n_images: int, fps: float, size_px: int, seed: int) -> list[Path]:
    """Known-good parts as PNGs that went through the demo camera's MJPG encoding.

    A gallery built from these shares the live frames' image domain (PNG-only galleries score every JPEG
    frame a little higher).
    """
    folder.mkdir(parents=True, exist_ok=True)
    video = folder / "good_parts.avi"
    write_demo_video(video, n_images, fps, n_images + 1, size_px, seed)
    images: list[Path] = []
    for index, frame in enumerate(read_video_frames(video)):
        target = folder / f"good_{index:03d}.png"
        _write_png(target, frame)
        images.append(target)
    return images

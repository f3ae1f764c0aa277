"""Image files a folder camera may meet on a plant: undecodable ones and odd but valid ones."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

HUGE_SIDE_PX = 8000
GOOD_SIDE_PX = 160  # the test gallery's frame size: odd formats of the right size are scored
UNDECODABLE = ("a_empty", "b_text")  # stems of the files no decoder can read
TOO_LARGE = "h_huge"  # 8000 x 8000: larger than the default max_frame_px
WRONG_SIZE = "c_one_pixel"  # valid, but not the gallery's size: an ERROR verdict naming both sizes


def write_bad_frames(folder: Path) -> dict[str, str]:
    """Write one file of each kind into ``folder``; return {stem: what it is}, in file (sorted) order."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "a_empty.png").write_bytes(b"")
    (folder / "b_text.png").write_text("this is not a picture\n", encoding="utf-8")
    rng = np.random.default_rng(5)
    side = GOOD_SIDE_PX
    images: dict[str, np.ndarray] = {
        "c_one_pixel": np.full((1, 1, 3), 128, np.uint8),
        "d_sixteen_bit": rng.integers(0, 65535, (side, side, 3), dtype=np.uint16),
        "e_four_channel": rng.integers(0, 255, (side, side, 4), dtype=np.uint8),
        "f_grayscale": rng.integers(0, 255, (side, side), dtype=np.uint8),
        "g_normal": rng.integers(0, 255, (side, side, 3), dtype=np.uint8),
        TOO_LARGE: np.zeros((HUGE_SIDE_PX, HUGE_SIDE_PX), np.uint8),
    }
    for stem, image in images.items():
        assert cv2.imwrite(str(folder / f"{stem}.png"), image), stem
    kinds = {"a_empty": "0-byte", "b_text": "text"}
    kinds.update({stem: stem.split("_", 1)[1] for stem in images})
    return kinds

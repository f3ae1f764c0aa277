"""The issue's check on real data (MVTec AD bottle): a memory-bank gallery whose region mask ignores the left
half PASSes a good bottle with a real defect pasted into the left half and FAILs the same defect mirrored into
the right half, by the score CLI and by the real daemon (a folder camera), defect regions on the bus."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.core.names import EXIT_OK
from tests.processes import DaemonProcess, Subscriber
from tests.support import SHARED_DATA, free_port, run_cli, wait_until
from tests.toml_config import NO_METRICS, tcp, write_daemon_config

BOTTLE = SHARED_DATA / "mvtec_bottle"
DEFECT = ("broken_small", "000")  # a broken rim piece lying wholly in the left half (x 113-166 of 512)
GOOD = "000"
GALLERY_EVERY = 2  # every 2nd train/good image: 105 bottles, half the build time
DILATE_PX = 5  # the pasted patch: the ground-truth mask grown by this much
CONFIG_TOML = """
[model]
pixel_search = "memory_bank"
"""
CAMERA = "bottle"

pytestmark = [
    pytest.mark.shared_data,
    pytest.mark.slow,
    pytest.mark.skipif(
        not BOTTLE.is_dir(), reason=f"shared data not found: {BOTTLE} (MVTec AD bottle) is absent"
    ),
]


def pasted_frames(folder: Path) -> tuple[int, int]:
    """Write a_good.png, b_ignored.png (the defect where it was, left) and c_inspected.png (mirrored, right)."""
    good = cv2.imread(str(BOTTLE / "test" / "good" / f"{GOOD}.png"))
    defect = cv2.imread(str(BOTTLE / "test" / DEFECT[0] / f"{DEFECT[1]}.png"))
    mask = cv2.imread(
        str(BOTTLE / "ground_truth" / DEFECT[0] / f"{DEFECT[1]}_mask.png"), cv2.IMREAD_GRAYSCALE
    )
    assert good is not None and defect is not None and mask is not None, (
        "the shared bottle images are readable"
    )
    patch = cv2.dilate(mask, np.ones((2 * DILATE_PX + 1,) * 2, np.uint8)) > 0
    _, xs = np.nonzero(patch)
    width = good.shape[1]
    assert xs.max() < width // 2, "the chosen defect must lie in the left half"
    left = good.copy()
    left[patch] = defect[patch]
    right = good.copy()
    flipped = patch[:, ::-1]
    right[flipped] = defect[:, ::-1][flipped]
    for name, image in (("a_good", good), ("b_ignored", left), ("c_inspected", right)):
        assert cv2.imwrite(str(folder / f"{name}.png"), image)
    return width, good.shape[0]


def test_a_pasted_bottle_defect_passes_in_the_ignored_half_and_fails_in_the_inspected_half(
    tmp_path: Path,
) -> None:
    images = tmp_path / "train"
    images.mkdir()
    for path in sorted((BOTTLE / "train" / "good").glob("*.png"))[::GALLERY_EVERY]:
        (images / path.name).symlink_to(path)
    frames = tmp_path / "frames"
    frames.mkdir()
    width, height = pasted_frames(frames)
    region = tmp_path / "right_half.png"
    mask = np.zeros((height, width), np.uint8)
    mask[:, width // 2 :] = 255
    cv2.imwrite(str(region), mask)
    config = tmp_path / "model.toml"
    config.write_text(CONFIG_TOML)
    gallery = tmp_path / "bottle.gallery"
    built = run_cli("gallery", "build", "--images", images, "--out", gallery, "--config", config,
                    "--region-mask", region)  # fmt: skip
    assert built.returncode == EXIT_OK, built.stderr[-2000:]

    scored = run_cli("score", "--gallery", gallery, "--json", *sorted(frames.iterdir()))
    assert scored.returncode == EXIT_OK, scored.stderr[-2000:]
    docs = {Path(d["path"]).stem: d for d in map(json.loads, scored.stdout.splitlines())}
    want = {"a_good": "PASS", "b_ignored": "PASS", "c_inspected": "FAIL"}
    assert {k: d["verdict"] for k, d in docs.items()} == want, docs
    assert (
        docs["b_ignored"]["defects"] == [] and docs["c_inspected"]["defects"][0]["box"][0] >= width // 2 - 2
    )

    bus = tcp(free_port())
    daemon_config = write_daemon_config(
        tmp_path / "inspector.toml",
        cameras=[{"name": CAMERA, "source": frames, "fps": 1.0, "queue_size": 16}],
        worker={"gallery": gallery},
        bus={"bind": bus},
        metrics=NO_METRICS,
    )
    sub = Subscriber(bus)
    daemon = DaemonProcess(daemon_config)
    try:
        daemon.wait_event("daemon_ready")
        wait_until(lambda: len(sub.got.of(CAMERA)) >= len(want), "a verdict for each frame")
        assert daemon.terminate() == 0
    finally:
        sub.close()
        daemon.close()
    verdicts = {v.part_id: v for v in sub.got.of(CAMERA)}
    assert {k: v.verdict for k, v in verdicts.items()} == want
    assert verdicts["c_inspected"].defects and verdicts["b_ignored"].defects == []
    for name, doc in docs.items():  # the daemon and the CLI agree
        assert verdicts[name].score == pytest.approx(doc["score"], rel=1e-3)

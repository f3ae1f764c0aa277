"""The embedded demo: synthetic parts, a gallery built from the good ones, verdicts on the test parts."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from inspector.config.load import load_config
from inspector.core.names import EXIT_FAILURE, EXIT_OK
from inspector.demo.data import write_dataset
from inspector.model.build import build_and_calibrate, list_images
from inspector.model.engine import Inspector
from inspector.quality.scoring import format_line, score_files

DEMO_CATEGORY = "demo_part"
DEMO_TRAIN_IMAGES = 60
DEMO_TEST_GOOD = 12
DEMO_TEST_PER_DEFECT = 4


def run_demo(workdir: Path, out: TextIO) -> int:
    """Generate data under workdir, build and calibrate a gallery, score every test image, print a summary.

    Returns:
        0 when every test part got the verdict its label implies, 1 otherwise.
    """
    config = load_config(None)
    root = write_dataset(
        workdir / "data",
        DEMO_CATEGORY,
        n_train=DEMO_TRAIN_IMAGES,
        n_test_good=DEMO_TEST_GOOD,
        n_test_per_defect=DEMO_TEST_PER_DEFECT,
    )
    print(f"demo data: {root}", file=out)
    gallery = workdir / "demo_part.gallery"
    images = list_images(root / "train" / "good")
    _, cal = build_and_calibrate(images, gallery, config.model, config.runtime, config.calibration)
    print(f"gallery: {gallery} (threshold {cal.image_threshold:.4f})", file=out)
    inspector = Inspector.from_gallery(gallery, config.runtime)
    tests = sorted(p for d in sorted((root / "test").iterdir()) for p in list_images(d))
    correct = 0
    for fs in score_files(inspector, tests):
        print(format_line(fs, as_json=False), file=out)
        expected = "PASS" if fs.path.parent.name == "good" else "FAIL"
        correct += int(fs.result is not None and fs.result.verdict == expected)
    print(f"demo: {correct}/{len(tests)} parts got the expected verdict", file=out)
    return EXIT_OK if correct == len(tests) else EXIT_FAILURE

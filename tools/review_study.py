"""Review-band study: what a REVIEW band of 5% and 10% of good parts catches, beside today's two-way verdicts,
and the re-teach loop (false rejects of one half of test/good judged good and added; the other half measured).

    .venv/bin/python tools/review_study.py --data ../shared/data/magnetic_tile [--loop]

Per category: the gallery is built from train/good and calibrated leave-one-out exactly as
``inspector gallery build`` does (the shipped defaults), every test image is scored once, and the review
thresholds are read from the calibration's own normal scores at target_false_reject_rate + review rate.
"""

from __future__ import annotations

import inspector as _package  # noqa: F401 - first: sets OMP_WAIT_POLICY before torch loads

# isort: split

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from inspector.config.calibration import CalibrationConfig
from inspector.config.model import ModelConfig
from inspector.config.runtime import RuntimeConfig
from inspector.model import calibration as calib
from inspector.model.build import add_to_gallery, build_and_calibrate, list_images
from inspector.model.engine import BackboneCache, Inspector, iter_batches
from inspector.model.manifest import Calibration
from inspector.model.preprocess import read_image
from inspector.quality.evaluate import GOOD, TestImage, list_tests

RUNTIME = RuntimeConfig()
REVIEW_RATES = (0.05, 0.10)


def scores_of(gallery: Path, paths: Sequence[Path], backbones: BackboneCache) -> np.ndarray:
    """Image scores of files against a gallery, in order."""
    inspector = Inspector.from_gallery(gallery, RUNTIME, backbones=backbones)
    out: list[float] = []
    for batch in iter_batches(list(paths), RUNTIME.batch_size):
        out += [r.score for r in inspector.score([read_image(p) for p in batch])]
    return np.array(out)


def rate(count: int, n: int) -> str:
    """``count/n = p% [lo-hi]`` with the 95% Clopper-Pearson interval."""
    lo, hi = calib.clopper_pearson(count, max(n, 1))
    return f"{count}/{n} = {count / max(n, 1):.1%} [{lo:.1%}-{hi:.1%}]"


def band_rows(cal: Calibration, labels: np.ndarray, scores: np.ndarray) -> list[str]:
    """Markdown rows: two-way, then each review rate."""
    good, bad = scores[labels == 0], scores[labels == 1]
    rows = [
        (
            f"| two-way (no band) | {cal.image_threshold:.4g} | - | {rate(int((good > cal.image_threshold).sum()), good.size)} "
            f"| - | {rate(int((bad > cal.image_threshold).sum()), bad.size)} |"
        )
    ]
    normal = np.array(cal.normal_scores)
    for review_rate in REVIEW_RATES:
        review = calib.threshold_at_rate(normal, cal.target_false_reject_rate + review_rate)
        fail_g, review_g = (
            int((good > cal.image_threshold).sum()),
            int(((good > review) & (good <= cal.image_threshold)).sum()),
        )
        caught = int((bad > review).sum())
        rows.append(
            f"| review band {review_rate:.0%} | {cal.image_threshold:.4g} | {review:.4g} | {rate(fail_g, good.size)} "
            f"| {rate(review_g, good.size)} | {rate(caught, bad.size)} |"
        )
    return rows


def study(category: Path, work: Path, loop: bool) -> None:
    """Print the category's table (and the loop's when asked)."""
    backbones = BackboneCache()
    gallery = work / f"{category.name}.gallery"
    train = list_images(category / "train" / GOOD)
    _, cal = build_and_calibrate(
        train, gallery, ModelConfig(), RUNTIME, CalibrationConfig(), backbones=backbones
    )
    tests = list_tests(category)
    labels = np.array([int(t.defect_type != GOOD) for t in tests])
    scores = scores_of(gallery, [t.path for t in tests], backbones)
    print(f"\n### {category.name} ({len(train)} gallery images, {int((labels == 0).sum())} good and "
          f"{int(labels.sum())} defective test images)\n")  # fmt: skip
    print(
        "| verdicts | image threshold | review threshold | good parts FAIL | good parts REVIEW | defects caught (FAIL or REVIEW) |"
    )
    print("|---|---|---|---|---|---|")
    for row in band_rows(cal, labels, scores):
        print(row)
    if loop:
        reteach_loop(category, gallery, tests, scores, labels, backbones)


def reteach_loop(
    category: Path, gallery: Path, tests: list[TestImage], scores: np.ndarray, labels: np.ndarray,
    backbones: BackboneCache,
) -> None:  # fmt: skip
    """Judge the false rejects of every other good test image as good, add them, measure the other half."""
    good = [i for i, t in enumerate(tests) if labels[i] == 0]
    half_a, half_b = good[0::2], good[1::2]
    cal_before = Inspector.from_gallery(gallery, RUNTIME, backbones=backbones).gallery.manifest.calibration
    assert cal_before is not None
    rejected = [tests[i].path for i in half_a if scores[i] > cal_before.image_threshold]
    defects = [i for i in range(len(tests)) if labels[i] == 1]
    measured = [tests[i].path for i in (*half_b, *defects)]
    before = scores[[*half_b, *defects]]
    grown = add_to_gallery(gallery, rejected, RUNTIME, backbones=backbones)
    cal_after = grown.manifest.calibration
    assert cal_after is not None
    after = scores_of(gallery, measured, backbones)
    n_b = len(half_b)
    print(f"\nRe-teach loop on {category.name}: {len(rejected)} false rejects of half A ({len(half_a)} good images) "
          f"judged good and added; measured on half B ({n_b} good) and every defect ({len(defects)}):\n")  # fmt: skip
    print("| gallery | image threshold | false rejects (half B) | escapes |")
    print("|---|---|---|---|")
    for name, thr, vals in (
        ("before", cal_before.image_threshold, before),
        ("after", cal_after.image_threshold, after),
    ):
        frr = int((vals[:n_b] > thr).sum())
        esc = int((vals[n_b:] <= thr).sum())
        print(f"| {name} | {thr:.4g} | {rate(frr, n_b)} | {rate(esc, len(defects))} |")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the study on each ``--data`` category."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, action="append", required=True, help="a category folder (repeatable)")
    p.add_argument("--loop", action="store_true", help="also run the re-teach loop")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="review_study_") as tmp:
        for category in args.data:
            study(category, Path(tmp), args.loop)
    return 0


if __name__ == "__main__":
    sys.exit(main())

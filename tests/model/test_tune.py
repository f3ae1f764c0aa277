"""Tests for inspector.model.tune: thresholds from labelled parts, refusals that say how many are needed."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from inspector.config.calibration import CalibrationConfig
from inspector.config.runtime import RuntimeConfig
from inspector.demo.data import write_dataset
from inspector.model.build import list_images
from inspector.model.calibration import threshold_at_rate
from inspector.model.engine import Inspector
from inspector.model.preprocess import read_image
from inspector.model.thresholds import CalibrationError
from inspector.model.tune import good_images_needed, tune_gallery
from tests.support import SyntheticGallery

RUNTIME = RuntimeConfig()


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("labelled")
    return write_dataset(root, "part", n_train=2, n_test_good=10, n_test_per_defect=2, size_px=160, seed=31)


def test_too_few_labelled_good_images_or_no_defect_is_refused_saying_how_many(
    synthetic_gallery: SyntheticGallery, labelled: Path, tmp_path: Path
) -> None:
    gallery = Path(shutil.copyfile(synthetic_gallery.path, tmp_path / "g.safetensors"))
    before = gallery.read_bytes()
    goods = list_images(labelled / "test" / "good")
    defects = list_images(labelled / "test" / "scratch")
    assert good_images_needed(0.01) == 100 and good_images_needed(0.2) == 5
    with pytest.raises(
        CalibrationError, match="10 labelled good images cannot set a 1.00% .*at least 100 are needed"
    ):
        tune_gallery(gallery, goods, defects, RUNTIME, CalibrationConfig())
    with pytest.raises(CalibrationError, match="no labelled defective image"):
        tune_gallery(gallery, goods, [], RUNTIME, CalibrationConfig(target_false_reject_rate=0.2))
    assert gallery.read_bytes() == before


def test_the_threshold_is_the_labelled_goods_quantile_and_the_defects_are_counted(
    synthetic_gallery: SyntheticGallery, labelled: Path, tmp_path: Path
) -> None:
    gallery = Path(shutil.copyfile(synthetic_gallery.path, tmp_path / "g.safetensors"))
    goods = list_images(labelled / "test" / "good")
    defects = [
        p for d in ("scratch", "dent", "stain", "missing_piece") for p in list_images(labelled / "test" / d)
    ]
    targets = CalibrationConfig(target_false_reject_rate=0.2, target_review_rate=0.2)
    tuned = tune_gallery(gallery, goods, defects, RUNTIME, targets)
    cal = tuned.calibration
    assert cal.method == "labelled" and cal.n_images == len(goods)
    assert cal.image_threshold == threshold_at_rate(np.array(cal.normal_scores), 0.2)
    assert cal.review_threshold == threshold_at_rate(np.array(cal.normal_scores), 0.4)
    inspector = Inspector.from_gallery(gallery, RUNTIME)
    scores = np.array([r.score for r in inspector.score([read_image(p) for p in defects])])
    assert len(tuned.escaped) == int((scores <= cal.image_threshold).sum())
    assert len(tuned.passed) == int((scores <= cal.review_threshold).sum()) and tuned.n_defects == len(
        defects
    )
    lo, hi = tuned.escape_bounds()
    assert 0.0 <= lo <= len(tuned.escaped) / len(defects) <= hi <= 1.0

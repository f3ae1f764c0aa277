"""inspector eval on the project's own synthetic data: layout discovery, report files, sane metric values."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from inspector.config.load import load_config
from inspector.config.root import InspectorConfig
from inspector.demo.data import write_dataset
from inspector.model.gallery import read_gallery_hash
from inspector.quality.evaluate import EvalError, find_categories, list_tests, run_eval
from inspector.quality.metrics import image_auroc, pixel_auroc
from inspector.quality.report import METRIC_KEYS

SMALL_MODEL = {"resize_px": 128, "crop_px": 112}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("eval_data")
    write_dataset(root, "flange", n_train=16, n_test_good=4, n_test_per_defect=2, size_px=128, seed=3)
    return root


@pytest.fixture(scope="module")
def config() -> InspectorConfig:
    return load_config(None, {"model": SMALL_MODEL, "runtime": {"batch_size": 8}})


def test_eval_writes_metrics_report_plots_and_montage_with_sane_values(
    data: Path, config: InspectorConfig, tmp_path: Path
) -> None:
    seen: list[tuple[str, int]] = []

    def progress(desc: str, total: int) -> Callable[[int], None]:
        seen.append((desc, total))
        return lambda n: None

    out = tmp_path / "report"
    evals, metrics = run_eval(data, None, out, config, progress, with_maps=True)
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == metrics
    assert list(on_disk) == ["flange"]
    m = on_disk["flange"]
    assert set(METRIC_KEYS) <= set(m)
    assert m["target_false_reject_rate"] == config.calibration.target_false_reject_rate
    assert m["false_reject_ci_low"] <= m["false_reject_rate"] <= m["false_reject_ci_high"]
    for key in ("image_auroc", "pixel_auroc", "pro", "f1_max", "false_reject_rate", "escape_rate"):
        assert 0.0 <= m[key] <= 1.0, key
    assert m["ms_per_image"] > 0
    # the synthetic defects are plainly visible: a working pipeline ranks them well above chance
    assert m["image_auroc"] > 0.8 and m["pixel_auroc"] > 0.8
    report = (out / "report.md").read_text()
    assert "flange" in report and "Pixel AUROC" in report
    for png in ("roc_flange.png", "montage_flange.png"):
        assert (out / png).stat().st_size > 1000
    assert (out / "galleries" / "flange.gallery").is_file()
    assert [d for d, _ in seen] == ["flange features", "flange calibration", "flange test"]
    assert [ev.name for ev in evals] == ["flange"] and evals[0].gallery_sha256 == read_gallery_hash(
        out / "galleries" / "flange.gallery"
    )
    assert seen[1][1] == 16 + 16  # the stage-scale pass, then every gallery image
    assert seen[2][1] == 4 + 4 * 2  # every test image scored
    assert "| threshold that meets the target on this test set |" in report
    assert "a zero-failure check" not in report and "needs 299 normal images with no failure" in report
    with np.load(out / "maps_flange.npz", allow_pickle=False) as saved:
        maps, masks, labels, scores = saved["maps"], saved["masks"], saved["labels"], saved["scores"]
        assert maps.shape == masks.shape == (12, 112, 112) and masks.dtype == bool
        assert list(saved["defect_types"]).count("good") == 4 and saved["image_paths"].shape == (12,)
        threshold = float(saved["image_threshold"])
    # every metric recomputes from the saved arrays alone
    assert pixel_auroc(masks, maps) == pytest.approx(m["pixel_auroc"])
    assert image_auroc(labels, scores) == pytest.approx(m["image_auroc"])
    assert np.mean(scores[labels == 0] > threshold) == pytest.approx(m["false_reject_rate"])


def test_a_single_category_folder_or_a_folder_of_categories_is_found(data: Path) -> None:
    assert find_categories(data, None) == [data / "flange"]
    assert find_categories(data / "flange", None) == [data / "flange"]
    with pytest.raises(EvalError, match="no category named nope"):
        find_categories(data, ["nope"])


def test_a_defect_image_without_its_mask_is_refused_naming_it(tmp_path: Path) -> None:
    root = write_dataset(tmp_path, "c", n_train=2, n_test_good=1, n_test_per_defect=1, size_px=64, seed=1)
    mask = next((root / "ground_truth" / "scratch").iterdir())
    mask.unlink()
    with pytest.raises(EvalError, match="ground-truth mask .* not found"):
        list_tests(root)


def test_a_folder_without_mvtec_layout_is_refused(tmp_path: Path) -> None:
    with pytest.raises(EvalError, match="MVTec layout expected"):
        find_categories(tmp_path, None)

"""Tests for inspector.quality.report: files written, metrics.json contents, published figures, montage and overlay."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.model.maps import overlay_heatmap
from inspector.quality import montage as mt
from inspector.quality import report
from inspector.quality.montage import colour_bar, render_montage, select_escapes, select_false_rejects
from inspector.quality.report import CategoryEval, compute_metrics, write_report

SIZE = 32
LABELS = np.array([0, 0, 0, 1, 1, 1])
# Threshold 0.5: good 0.55 and 0.70 are false rejects, defective 0.40 is an escape.
SCORES = np.array([0.20, 0.55, 0.70, 0.40, 0.80, 0.90])
THRESHOLD = 0.5
SETTINGS: dict[str, object] = {"backbone": "wide_resnet50_2", "k": 50, "crop_px": SIZE}
EXPECTED_KEYS = [
    "image_auroc",
    "pixel_auroc",
    "pro",
    "f1_max",
    "false_reject_rate",
    "escape_rate",
    "ms_per_image",
]


def make_eval(name: str = "mvtec_bottle", scores: np.ndarray = SCORES) -> CategoryEval:
    """Six 32x32 images; defect pixels score in [0.6, 1.1), all others in [0, 0.5)."""
    rng = np.random.default_rng(3)
    masks = np.zeros((6, SIZE, SIZE), dtype=bool)
    for i in (3, 4, 5):
        masks[i, 4 * i - 8 : 4 * i, 6:20] = True
    maps = (rng.random((6, SIZE, SIZE)) * 0.5).astype(np.float32) + masks * np.float32(0.6)
    ramp = np.linspace(0, 255, SIZE, dtype=np.uint8)
    images = np.zeros((6, SIZE, SIZE, 3), dtype=np.uint8)
    images[..., 1] = ramp[None, None, :]
    images[..., 2] = ramp[None, :, None]
    return CategoryEval(
        name=name,
        image_paths=[f"/data/{name}/{i:03d}.png" for i in range(6)],
        labels=LABELS,
        defect_types=["good"] * 3 + ["broken_large", "contamination", "broken_small"],
        scores=scores,
        threshold=THRESHOLD,
        maps=maps,
        masks=masks,
        images=images,
        ms_per_image=12.5,
    )


def test_compute_metrics_matches_hand_worked_values() -> None:
    metrics = compute_metrics(make_eval())
    assert list(metrics) == EXPECTED_KEYS
    # Image AUROC: defective 0.40 beats 0.20 only (1/3), 0.80 and 0.90 beat all 3 goods -> 7/9.
    assert metrics["image_auroc"] == pytest.approx(7 / 9)
    # Defect pixels in [0.6, 1.1) all above good pixels in [0, 0.5): perfect pixel ranking.
    assert metrics["pixel_auroc"] == pytest.approx(1.0)
    assert metrics["pro"] == pytest.approx(1.0)
    # Desc scores 0.9(1) 0.8(1) 0.7(0) 0.55(0) 0.4(1) 0.2(0): best F1 at >=0.8: P 1, R 2/3 -> 0.8.
    assert metrics["f1_max"] == pytest.approx(0.8)
    # Goods above 0.5: 0.55, 0.70 -> 2/3; defectives <= 0.5: 0.40 -> 1/3.
    assert metrics["false_reject_rate"] == pytest.approx(2 / 3)
    assert metrics["escape_rate"] == pytest.approx(1 / 3)
    assert metrics["ms_per_image"] == 12.5


def test_write_report_creates_all_files_and_metrics_json_equals_compute_metrics(tmp_path: Path) -> None:
    ev = make_eval()
    returned = write_report(tmp_path / "out", [ev], SETTINGS)
    out = tmp_path / "out"
    names = {"metrics.json", "report.md", "roc_mvtec_bottle.png", "montage_mvtec_bottle.png"}
    assert {p.name for p in out.iterdir()} == names
    written = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert list(written) == ["mvtec_bottle"]
    assert list(written["mvtec_bottle"]) == EXPECTED_KEYS
    assert written["mvtec_bottle"] == pytest.approx(compute_metrics(ev))
    assert returned == written


def test_report_md_has_category_table_settings_and_png_links(tmp_path: Path) -> None:
    write_report(tmp_path, [make_eval("mvtec_bottle"), make_eval("widget")], SETTINGS)
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "## mvtec_bottle" in text and "## widget" in text
    assert text.count("| Metric | Ours") == 2
    assert "| Image AUROC (%) | 77.78 |" in text  # 7/9 as a percentage
    assert "| backbone | wide_resnet50_2 |" in text
    for png in ("roc_mvtec_bottle.png", "montage_mvtec_bottle.png", "roc_widget.png", "montage_widget.png"):
        assert f"]({png})" in text


def test_published_figures_appear_for_mvtec_bottle_and_not_for_unknown_category(tmp_path: Path) -> None:
    write_report(tmp_path, [make_eval("mvtec_bottle"), make_eval("widget")], SETTINGS)
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    bottle, widget = text.split("## widget")
    header = "| Metric | Ours | SPADE paper (Wide-ResNet50x2) | PatchCore paper | anomalib PatchCore |"
    assert header in bottle
    assert "| Pixel AUROC (%) | 100.00 | 98.40 | 98.50 | 97.96 |" in bottle
    assert "| PRO, FPR <= 0.3 (%) | 100.00 | 95.50 | – | 92.07 |" in bottle
    assert "| Metric | Ours |\n" in widget
    assert "SPADE paper" not in widget


def test_pngs_load_with_expected_sizes(tmp_path: Path) -> None:
    write_report(tmp_path, [make_eval()], SETTINGS)
    roc = cv2.imread(str(tmp_path / "roc_mvtec_bottle.png"))
    assert roc is not None
    w_in, h_in = report.ROC_FIGSIZE_IN
    assert roc.shape == (round(h_in * report.ROC_DPI), round(w_in * report.ROC_DPI), 3)
    assert roc.std() > 0  # not a blank canvas
    montage = cv2.imread(str(tmp_path / "montage_mvtec_bottle.png"))
    assert montage is not None
    tile = SIZE * math.ceil(mt.TILE_MIN_PX / SIZE)
    rows = 2 + 3  # two false rejects, then one row per defect type (one image each, see SCORES)
    band = mt.LABEL_BAND_PX
    width = 2 * (tile + mt.TILE_GAP_PX) + mt.BAR_WIDTH_PX + mt.BAR_LABEL_PX
    assert montage.shape == (band + rows * (band + tile), width, 3)


def test_false_rejects_are_goods_above_threshold_highest_first_else_top_goods() -> None:
    assert select_false_rejects(make_eval()) == [2, 1]
    # No good image above 0.5: fall back to the highest-scoring goods.
    calm = make_eval(scores=np.array([0.20, 0.45, 0.30, 0.40, 0.80, 0.90]))
    assert select_false_rejects(calm) == [1, 2, 0]
    assert select_false_rejects(calm, limit=1) == [1]


def _typed(types: list[str], scores: list[float]) -> CategoryEval:
    ev = make_eval()
    return CategoryEval(
        **{**ev.__dict__, "defect_types": ["good"] * 3 + types, "scores": np.array([0.2, 0.55, 0.7, *scores])}
    )


def test_escapes_are_shown_per_defect_type_lowest_first_else_that_types_lowest() -> None:
    # type a: 0.30 and 0.50 escape (== threshold escapes); type b: 0.90 is caught, shown as its lowest
    ev = _typed(["a", "b", "a"], [0.50, 0.90, 0.30])
    assert select_escapes(ev) == [5, 3, 4]
    assert select_escapes(ev, per_type=1) == [5, 4]
    many = _typed(["a", "a", "a"], [0.10, 0.30, 0.20])
    assert select_escapes(many) == [3, 5]  # at most two of one type


def test_montage_outlines_the_ground_truth_on_the_image_and_the_heatmap() -> None:
    ev = make_eval()
    picture = render_montage(ev)
    scale = math.ceil(mt.TILE_MIN_PX / SIZE)
    tile = SIZE * scale
    band = mt.LABEL_BAND_PX
    # The first escape row (type broken_large, image 3) follows the two false rejects.
    top = band + 2 * (band + tile) + band
    expected = cv2.resize(ev.masks[3].astype(np.uint8), (tile, tile), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(expected, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    edge = np.zeros_like(expected)
    cv2.drawContours(edge, contours, -1, 1, 1)
    heat = overlay_heatmap(ev.images[3], ev.maps[3], *mt.heat_range(ev))
    on = edge.astype(bool)
    for col, plain in enumerate((ev.images[3], heat)):
        x0 = col * (tile + mt.TILE_GAP_PX)
        drawn = picture[top : top + tile, x0 : x0 + tile]
        big = cv2.resize(plain, (tile, tile), interpolation=cv2.INTER_NEAREST)
        assert np.all(drawn[on] == mt.OUTLINE_BGR)  # the outline, in green, on the region's boundary
        np.testing.assert_array_equal(drawn[~on], big[~on])  # and nothing else drawn over the picture
    assert len(np.unique(picture[top - band : top].reshape(-1, 3), axis=0)) > 1  # a drawn label


def test_colour_bar_runs_hot_to_cold_and_marks_the_threshold_at_its_value() -> None:
    bar = colour_bar(101, 0.0, 2.0, [("pixel thr", 1.0)])
    jet = cv2.applyColorMap(np.array([[255, 0]], dtype=np.uint8), cv2.COLORMAP_JET)[0]
    np.testing.assert_array_equal(bar[0, 0], jet[0])
    np.testing.assert_array_equal(bar[100, 0], jet[1])
    np.testing.assert_array_equal(bar[50, : mt.BAR_WIDTH_PX], np.full((mt.BAR_WIDTH_PX, 3), mt.THRESHOLD_BGR))
    assert not np.all(bar[49, : mt.BAR_WIDTH_PX] == mt.THRESHOLD_BGR)
    assert bar.shape == (101, mt.BAR_WIDTH_PX + mt.BAR_LABEL_PX, 3)


def test_montage_heat_scale_is_twice_the_pixel_threshold_when_known() -> None:
    ev = CategoryEval(**{**make_eval().__dict__, "pixel_threshold": 0.6})
    assert mt.heat_range(ev) == (0.0, 1.2)
    plain = make_eval()
    assert mt.heat_range(plain) == (float(plain.maps.min()), float(plain.maps.max()))


def test_overlay_heatmap_blends_jet_half_and_half() -> None:
    image = np.full((4, 4, 3), 100, dtype=np.uint8)
    amap = np.zeros((4, 4), dtype=np.float32)
    amap[0, 0] = 2.0  # above vmax: clipped to the hottest colour
    amap[1, 1] = 1.0
    out = overlay_heatmap(image, amap, vmin=0.0, vmax=1.0)
    jet = cv2.applyColorMap(np.array([[0, 255]], dtype=np.uint8), cv2.COLORMAP_JET)[0].astype(float)
    cold, hot = (100 + jet[0]) / 2, (100 + jet[1]) / 2
    np.testing.assert_allclose(out[0, 0], hot, atol=1)
    np.testing.assert_allclose(out[1, 1], hot, atol=1)
    np.testing.assert_allclose(out[3, 3], cold, atol=1)
    assert out.dtype == np.uint8 and out.shape == image.shape


def test_overlay_heatmap_resizes_map_and_rejects_empty_range() -> None:
    image = np.zeros((20, 30, 3), dtype=np.uint8)
    assert overlay_heatmap(image, np.ones((5, 5), dtype=np.float32), 0.0, 1.0).shape == (20, 30, 3)
    with pytest.raises(ValueError, match="vmax"):
        overlay_heatmap(image, np.ones((20, 30), dtype=np.float32), 1.0, 1.0)
    with pytest.raises(ValueError, match="image_bgr"):
        overlay_heatmap(image[..., 0], np.ones((20, 30), dtype=np.float32), 0.0, 1.0)


def test_pixel_roc_sample_keeps_both_classes_when_defects_are_rare() -> None:
    masks = np.zeros((4, 100, 100), dtype=bool)
    masks[0, :3, :3] = True  # 9 of 40,000 pixels
    maps = np.random.default_rng(0).random(masks.shape).astype(np.float32)
    labels, scores = report._sample_pixels(masks, maps, per_class=500)
    assert np.count_nonzero(labels) == 9
    assert 400 <= np.count_nonzero(~labels) <= 500
    assert scores.shape == labels.shape


def test_category_eval_rejects_inconsistent_fields() -> None:
    ev = make_eval()
    with pytest.raises(ValueError, match="'mvtec_bottle'.*scores has"):
        CategoryEval(**{**ev.__dict__, "scores": SCORES[:5]})
    with pytest.raises(ValueError, match="images must be uint8"):
        CategoryEval(**{**ev.__dict__, "images": ev.images.astype(np.float32)})
    with pytest.raises(ValueError, match="name must match"):
        CategoryEval(**{**ev.__dict__, "name": "../evil"})


def test_write_report_rejects_duplicate_category_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="duplicate category names"):
        write_report(tmp_path, [make_eval(), make_eval()], SETTINGS)


def test_each_montage_row_names_its_file_by_defect_type_and_name() -> None:
    ev = make_eval()
    assert mt.row_label(ev, 1) == "FALSE REJECT  good/001.png  score=0.55  thr=0.5"
    assert mt.row_label(ev, 3) == "ESCAPE  broken_large/003.png  score=0.4  thr=0.5"

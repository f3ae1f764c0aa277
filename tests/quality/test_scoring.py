"""Tests for offline scoring: per-file results and read errors, output lines, overlays, the 8-bit map."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from inspector.config.model import ModelConfig
from inspector.core.names import EXIT_OK, EXIT_UNREADABLE
from inspector.core.records import CropBox
from inspector.demo.data import write_dataset
from inspector.model.build import build_gallery, list_images
from inspector.model.engine import Inspector, ScoreResult
from inspector.model.gallery import load_gallery
from inspector.model.preprocess import read_image
from inspector.model.thresholds import calibrate_gallery
from inspector.quality.scoring import FileScore, format_line, score_files, score_paths, write_overlays
from tests.support import calibration_config as _calibration
from tests.support import read_png, runtime_config

SIZE_PX = 128
CROP_PX = 112
RTOL = 1e-4
CFG = ModelConfig.model_validate(
    {
        "resize_px": SIZE_PX,
        "crop_px": CROP_PX,
        "image_score": "map_max",
        "image_k": 4,
        "pixel_k": 4,
    }
)
RUNTIME = runtime_config(batch_size=4)
TEXT_LINE = re.compile(
    r"^(?P<path>\S+)\tscore=(?P<score>[\d.]+)\tthreshold=(?P<thr>[\d.]+)\t(?P<verdict>PASS|FAIL)"
    r"\tarea=(?P<area>\d+)px$"
)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("scoring_data")
    return write_dataset(
        root, "part", n_train=10, n_test_good=3, n_test_per_defect=1, size_px=SIZE_PX, seed=21
    )


@pytest.fixture(scope="module")
def gallery(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("scoring_gallery") / "g.safetensors"
    build_gallery(list_images(data / "train" / "good"), path, CFG, RUNTIME)
    calibrate_gallery(path, RUNTIME, _calibration())
    return path


@pytest.fixture(scope="module")
def inspector(gallery: Path) -> Inspector:
    return Inspector.from_gallery(gallery, RUNTIME)


def _test_paths(data: Path) -> list[Path]:
    return [p for d in sorted((data / "test").iterdir()) for p in list_images(d)]


def test_write_overlays_draw_the_frame_hot_regions_redder_and_the_mask_in_frame_pixels(
    tmp_path: Path,
) -> None:
    thr = 2.0
    amap = np.zeros((CROP_PX, CROP_PX), np.float32)
    amap[:, CROP_PX // 2 :] = 3 * thr
    mask = np.where(amap > thr, 255, 0).astype(np.uint8)
    frame = np.full((CROP_PX, 2 * CROP_PX, 3), 120, np.uint8)  # squashed 2:1 into the crop, no crop
    box = CropBox(x0=0.0, y0=0.0, x1=2.0 * CROP_PX, y1=float(CROP_PX), side_px=CROP_PX)
    result = ScoreResult(
        score=6.0,
        threshold=5.0,
        pixel_threshold=thr,
        verdict="FAIL",
        knn_score=1.0,
        map_max=6.0,
        anomaly_map=amap,
        mask=mask,
        defect_area_px=int(np.count_nonzero(mask)),
        crop=np.full((CROP_PX, CROP_PX, 3), 120, np.uint8),
        timings_ms={},
        crop_box=box,
        defect_area_frame_px=2 * int(np.count_nonzero(mask)),
    )
    write_overlays(tmp_path / "out", FileScore(Path("cams/part_7.png"), result, None, frame), thr)
    assert sorted(f.name for f in (tmp_path / "out").iterdir()) == ["part_7_mask.png", "part_7_overlay.png"]
    frame_mask = read_png(tmp_path / "out" / "part_7_mask.png")
    assert frame_mask.shape == frame.shape[:2] and set(np.unique(frame_mask).tolist()) == {0, 255}
    assert int(np.count_nonzero(frame_mask)) == result.defect_area_frame_px  # the right half of the frame
    assert not frame_mask[:, : CROP_PX - 1].any() and frame_mask[:, CROP_PX + 1 :].all()
    ov = read_png(tmp_path / "out" / "part_7_overlay.png")
    assert ov.shape == frame.shape and ov.dtype == np.uint8
    hot, cold = ov[CROP_PX // 2, -CROP_PX // 2].astype(int), ov[CROP_PX // 2, CROP_PX // 2].astype(int)  # BGR
    assert hot[2] > cold[2] and hot[0] < cold[0]


def test_score_files_reports_unreadable_files_in_their_place_and_scores_the_rest(
    inspector: Inspector, data: Path, tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\x00\x01 definitely not an image")
    missing = tmp_path / "missing.png"
    good = _test_paths(data)
    paths = [good[0], garbage, *good[1:4], missing, *good[4:]]
    out = list(score_files(inspector, paths))
    assert [fs.path for fs in out] == paths  # input order, unreadable files included where they were
    assert [fs.path for fs in out if fs.result is not None] == good
    bad = {fs.path: fs.error for fs in out if fs.result is None}
    assert set(bad) == {garbage, missing}
    assert all(str(p) in str(err) for p, err in bad.items())
    direct = inspector.score([read_image(p) for p in good])
    scored = [fs.result for fs in out if fs.result is not None]
    for a, b in zip(scored, direct, strict=True):
        assert a.score == pytest.approx(b.score, rel=RTOL)
        assert a.verdict == b.verdict or abs(a.score - a.threshold) <= RTOL * a.threshold


def test_format_line_text_and_json_carry_path_score_threshold_verdict_area(
    inspector: Inspector, data: Path
) -> None:
    fs = next(score_files(inspector, _test_paths(data)[:1]))
    r = fs.result
    assert r is not None
    m = TEXT_LINE.match(format_line(fs, as_json=False))
    assert m is not None
    assert m["path"] == str(fs.path) and m["verdict"] == r.verdict and int(m["area"]) == r.defect_area_px
    assert float(m["score"]) == pytest.approx(r.score, abs=1e-4)
    assert float(m["thr"]) == pytest.approx(r.threshold, abs=1e-4)
    doc = json.loads(format_line(fs, as_json=True, gallery=inspector.gallery.content_hash))
    assert doc["kind"] == "verdict" and doc["path"] == str(fs.path) and doc["verdict"] == r.verdict
    assert doc["gallery"] == inspector.gallery.content_hash
    assert doc["score"] == pytest.approx(r.score, abs=1e-6)
    assert doc["threshold"] == pytest.approx(r.threshold, abs=1e-6)
    assert doc["defect_area_px"] == r.defect_area_px
    bad = FileScore(Path("x/broken.png"), None, "x/broken.png: not a decodable image")
    assert json.loads(format_line(bad, as_json=True)) == {
        "kind": "unreadable",
        "path": "x/broken.png",
        "error": "x/broken.png: not a decodable image",
    }
    assert format_line(bad, as_json=False).split("\t")[:2] == ["x/broken.png", "UNREADABLE"]


def test_score_paths_writes_lines_overlays_and_masks_matching_the_results(
    gallery: Path, inspector: Inspector, data: Path, tmp_path: Path
) -> None:
    flat = tmp_path / "images"
    flat.mkdir()
    paths = [Path(shutil.copyfile(p, flat / f"{p.parent.name}_{p.name}")) for p in _test_paths(data)]
    out = io.StringIO()
    overlays = tmp_path / "overlays"
    assert score_paths(gallery, paths, RUNTIME, True, overlays, out) == EXIT_OK
    docs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [d["path"] for d in docs] == [str(p) for p in paths]
    cal = inspector.gallery.manifest.calibration
    assert cal is not None
    for p, d in zip(paths, docs, strict=True):
        mask = read_png(overlays / f"{p.stem}_mask.png")
        ov = read_png(overlays / f"{p.stem}_overlay.png")
        assert mask.shape == (SIZE_PX, SIZE_PX) and set(np.unique(mask).tolist()) <= {0, 255}
        assert ov.shape == (SIZE_PX, SIZE_PX, 3)  # the frames: 128 px, the middle 112 px inspected
        assert int(np.count_nonzero(mask)) == d["defect_area_frame_px"] == d["defect_area_px"]
        assert d["verdict"] == ("FAIL" if d["score"] > d["threshold"] else "PASS")


def test_overlays_of_files_with_the_same_name_in_different_folders_are_all_kept(
    gallery: Path, data: Path, tmp_path: Path
) -> None:
    """MVTec layouts repeat stems (test/good/000.png, test/stain/000.png): no overlay may silently replace another."""
    paths = [p for p in _test_paths(data) if p.stem == "000"]
    assert len({p.parent for p in paths}) == len(paths) > 1
    overlays = tmp_path / "overlays"
    assert score_paths(gallery, paths, RUNTIME, False, overlays, io.StringIO()) == EXIT_OK
    assert len(list(overlays.glob("*_mask.png"))) == len(paths)


def test_score_paths_exit_code_says_some_file_was_unreadable(
    gallery: Path, data: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"garbage")
    good = _test_paths(data)[:2]
    out = io.StringIO()
    assert score_paths(gallery, [broken, *good], RUNTIME, False, tmp_path / "ov", out) == EXIT_UNREADABLE
    lines = out.getvalue().splitlines()
    assert lines[0].startswith(f"{broken}\tUNREADABLE\t") and str(broken) in lines[0].split("\t", 2)[2]
    assert all(TEXT_LINE.match(line) for line in lines[1:]) and len(lines) == 3
    assert not (tmp_path / "ov" / "broken_mask.png").exists()


def test_write_overlays_fails_loudly_when_the_folder_cannot_be_written(
    inspector: Inspector, data: Path, tmp_path: Path
) -> None:
    fs = next(score_files(inspector, _test_paths(data)[:1]))
    blocker = tmp_path / "file_not_dir"
    blocker.write_text("x")
    with pytest.raises(OSError):
        write_overlays(blocker, fs, 1.0)


def test_scoring_uses_the_gallery_recorded_settings_not_the_config_defaults(
    gallery: Path, data: Path, tmp_path: Path
) -> None:
    out = io.StringIO()
    copy = shutil.copyfile(gallery, tmp_path / "g.safetensors")
    assert score_paths(copy, _test_paths(data)[:1], runtime_config(), True, None, out) == EXIT_OK
    doc = json.loads(out.getvalue())
    cal = load_gallery(copy).manifest.calibration
    assert cal is not None and doc["threshold"] == pytest.approx(cal.image_threshold, abs=1e-6)
    assert doc["score"] == pytest.approx(doc["map_max"], abs=1e-6)  # the gallery's map_max mode

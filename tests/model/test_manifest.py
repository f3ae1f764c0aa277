"""Integrity of a gallery's manifest: every verdict-changing field covered by the gallery hash, calibrations
checked against their own recorded normal scores."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from inspector.model.gallery import (
    load_gallery,
    migrate_legacy,
    read_manifest,
    save_gallery,
    staged_replace,
    update_calibration,
)
from inspector.model.header import GalleryError
from inspector.model.manifest import GALLERY_FORMAT_VERSION, Calibration, median, threshold_at_rate
from tests.model.test_gallery import _calibration, _features, _manifest, spec_gallery_hash

Edit = Callable[[dict[str, Any]], None]


def _calibrated(path: Path) -> dict[str, Any]:
    pooled, stages = _features()
    save_gallery(path, pooled, stages, _manifest())
    return update_calibration(path, _calibration()).model_dump(mode="json")


def _rewrite(path: Path, manifest: dict[str, Any], stored_hash: str) -> None:
    """Rewrite the file with this manifest text and this stored gallery hash, the tensors untouched."""
    tensors = load_file(str(path))
    metadata = {"inspector_manifest": json.dumps(manifest), "inspector_gallery_sha256": stored_hash}
    save_file(tensors, str(path), metadata=metadata)


def _set(*keys: str | int, value: Any) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        node: Any = doc
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value

    return edit


VERDICT_FIELDS: dict[str, Edit] = {
    "image threshold": _set("calibration", "image_threshold", value=1e9),
    "pixel threshold": _set("calibration", "pixel_threshold", value=1e9),
    "image k": _set("spade", "image_k", value=1),
    "pixel K": _set("spade", "pixel_k", value=1),
    "blur sigma": _set("spade", "blur_sigma_px", value=0.0),
    "neighbourhood": _set("spade", "neighbourhood_px", value=3),
    "image score mode": _set("spade", "image_score", value="map_max"),
    "stage fusion": _set("spade", "stage_fusion", value="scaled_mean"),
    "stages": _set("stages", value=[0, 1]),
    "resize": _set("preprocessing", "resize_px", value=512),
    "crop": _set("preprocessing", "crop_px", value=200),
    "keep aspect": _set("preprocessing", "keep_aspect", value=True),
    "input scale": _set("preprocessing", "input_scale", value="minus1_1"),
    "mean": _set("preprocessing", "mean", value=[0.5, 0.5, 0.5]),
    "std": _set("preprocessing", "std", value=[0.5, 0.5, 0.5]),
    "stage scales": _set("calibration", "stage_scales", value=[1.0, 2.0, 3.0]),
    "score median": _set("calibration", "score_median", value=5.0),
    "map max median": _set("calibration", "map_max_median", value=5.0),
    "source name": _set("sources", 0, "name", value="defect_000.png"),
    "source hash": _set("sources", 0, "sha256", value="cd" * 32),
    "backbone": _set("backbone", value="resnet18"),
    "weights": _set("weights_sha256", value="cd" * 32),
    "target rate": _set("calibration", "target_false_reject_rate", value=0.5),
    "threshold tail": _set("calibration", "tail", value="gaussian"),
}


@pytest.mark.parametrize("edit", VERDICT_FIELDS.values(), ids=list(VERDICT_FIELDS))
def test_editing_a_verdict_changing_manifest_field_makes_load_fail_naming_the_file(
    tmp_path: Path, edit: Edit
) -> None:
    path = tmp_path / "g.safetensors"
    doc = _calibrated(path)
    stored = load_gallery(path).sha256
    edit(doc)
    _rewrite(path, doc, stored)
    for load in (load_gallery, read_manifest):
        with pytest.raises(GalleryError) as info:
            load(path)
        assert str(path) in str(info.value) and info.value.reason.startswith("gallery hash mismatch")


def test_the_unedited_rewrite_loads_so_the_edits_alone_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "g.safetensors"
    doc = _calibrated(path)
    stored = load_gallery(path).sha256
    _rewrite(path, doc, stored)
    assert load_gallery(path).sha256 == stored == spec_gallery_hash(doc)


def test_a_missing_gallery_hash_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "g.safetensors"
    doc = _calibrated(path)
    save_file(load_file(str(path)), str(path), metadata={"inspector_manifest": json.dumps(doc)})
    with pytest.raises(GalleryError, match="missing gallery hash"):
        load_gallery(path)


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("image_threshold", 1e9, "image_threshold 1000000000.0 is not the 0.01 rate threshold"),
        ("pixel_threshold", 0.6, "pixel_threshold 0.6 is not the 0.01 rate threshold"),
        ("target_false_reject_rate", 0.4, "image_threshold 1.25 is not the 0.4 rate threshold"),
        ("score_median", 0.6, "score_median 0.6 is not the median"),
        ("image_score_median", 2.0, "image_score_median 2.0 is not the median"),
        ("n_images", 4, "n_images 4 but [5] normal scores recorded"),
    ],
)
def test_a_rehashed_but_inconsistent_calibration_is_refused(
    tmp_path: Path, field: str, value: Any, named: str
) -> None:
    path = tmp_path / "g.safetensors"
    doc = _calibrated(path)
    doc["calibration"][field] = value
    _rewrite(path, doc, spec_gallery_hash(doc))  # the hash recomputed by hand: only the record disagrees
    with pytest.raises(GalleryError) as info:
        load_gallery(path)
    assert str(path) in str(info.value)
    assert info.value.reason.startswith("inconsistent calibration") and named in info.value.reason


def test_update_calibration_refuses_an_inconsistent_calibration_and_keeps_the_file(tmp_path: Path) -> None:
    path = tmp_path / "g.safetensors"
    _calibrated(path)
    before = path.read_bytes()
    with pytest.raises(GalleryError, match="inconsistent calibration refused: image_threshold 1000000000.0"):
        update_calibration(path, _calibration().model_copy(update={"image_threshold": 1e9}))
    assert path.read_bytes() == before


def test_a_version_1_gallery_is_migrated_with_its_unverifiable_calibration_dropped(tmp_path: Path) -> None:
    path = tmp_path / "g.safetensors"
    doc = _calibrated(path)
    legacy = {**doc, "format_version": 1}
    legacy["calibration"] = {k: v for k, v in doc["calibration"].items() if not k.startswith("normal_")}
    save_file(load_file(str(path)), str(path), metadata={"inspector_manifest": json.dumps(legacy)})
    with pytest.raises(GalleryError, match="format version 1"):
        load_gallery(path)
    assert migrate_legacy(path) is True
    migrated = load_gallery(path)
    assert (
        migrated.manifest.format_version == GALLERY_FORMAT_VERSION and migrated.manifest.calibration is None
    )
    assert migrated.manifest.content_sha256 == doc["content_sha256"]
    assert migrate_legacy(path) is False


def test_migration_refuses_a_version_1_gallery_whose_tensors_were_modified(tmp_path: Path) -> None:
    path = tmp_path / "g.safetensors"
    doc = _calibrated(path)
    tensors = {k: v + 1.0 for k, v in load_file(str(path)).items()}
    save_file(tensors, str(path), metadata={"inspector_manifest": json.dumps({**doc, "format_version": 1})})
    with pytest.raises(GalleryError, match="content hash mismatch"):
        migrate_legacy(path)


@pytest.mark.parametrize(("rate", "n"), [(0.01, 5), (0.2, 12), (0.5, 7), (0.99, 3)])
def test_threshold_at_rate_and_median_agree_with_torch(rate: float, n: int) -> None:
    values = torch.randn(n, generator=torch.Generator().manual_seed(n)).tolist()
    threshold = threshold_at_rate(values, rate)
    assert threshold in values and sum(v > threshold for v in values) <= rate * n
    assert sum(v >= threshold for v in values) > rate * n
    assert median(values) == pytest.approx(float(torch.tensor(values, dtype=torch.float64).quantile(0.5)))


def test_the_consistent_calibration_of_the_tests_is_consistent() -> None:
    assert _calibration().inconsistencies() == []
    assert isinstance(_calibration(), Calibration)


DEGENERATE: dict[str, tuple[dict[str, Any], str]] = {
    "zero stage scale": (
        {"stage_scales": [0.0, 0.0, 0.0]},
        "stage scales [0.0, 0.0, 0.0] are not all positive",
    ),
    "all normal scores equal": (
        {"image_threshold": 1.0, "normal_scores": [1.0] * 5, "image_score_median": 1.0},
        "image threshold 1 is at or below the smallest normal score 1",
    ),
}


@pytest.mark.parametrize("change", DEGENERATE.values(), ids=list(DEGENERATE))
def test_a_degenerate_calibration_is_named_refused_by_update_and_by_load_even_rehashed(
    tmp_path: Path, change: tuple[dict[str, Any], str]
) -> None:
    update, named = change
    degenerate = _calibration().model_copy(update=update)
    assert degenerate.inconsistencies() == [] and named in " ".join(degenerate.degeneracies())
    assert _calibration().degeneracies() == []
    path = tmp_path / "g.safetensors"
    doc = _calibrated(path)
    before = path.read_bytes()
    with pytest.raises(GalleryError, match="degenerate calibration"):
        update_calibration(path, degenerate)  # the written file is read back before it replaces the old
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == [path.name]
    doc["calibration"] = degenerate.model_dump(mode="json")
    _rewrite(path, doc, spec_gallery_hash(doc))  # a gallery an older version calibrated on its own images
    with pytest.raises(GalleryError) as info:
        load_gallery(path)
    assert str(path) in str(info.value) and named in info.value.reason


def test_staged_replace_renames_over_the_file_only_when_the_block_succeeds(tmp_path: Path) -> None:
    path = tmp_path / "g.safetensors"
    path.write_bytes(b"old")
    path.chmod(0o640)
    with pytest.raises(KeyboardInterrupt), staged_replace(path, "building") as staging:
        staging.write_bytes(b"half")
        raise KeyboardInterrupt
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == [path.name]
    with staged_replace(path, "calibrating", copy_existing=True) as staging:
        assert staging.read_bytes() == b"old"
        staging.write_bytes(b"new")
    assert path.read_bytes() == b"new" and path.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_a_review_threshold_is_recomputed_from_the_recorded_scores_and_an_edited_one_refused() -> None:
    base = _calibration()
    band = base.model_copy(update={"target_review_rate": 0.2})
    assert band.inconsistencies() == [
        "review_threshold None is not the 0.21 rate threshold of the recorded normal scores (1.0)"
    ]
    good = band.model_copy(update={"review_threshold": threshold_at_rate(base.normal_scores, 0.21)})
    assert good.inconsistencies() == [] and good.review_threshold == 1.0
    assert [good.verdict_of(s) for s in (1.3, 1.25, 1.1, 1.0)] == ["FAIL", "REVIEW", "REVIEW", "PASS"]
    edited = good.model_copy(update={"review_threshold": 0.9})
    assert edited.inconsistencies()[0].startswith("review_threshold 0.9 is not the 0.21 rate threshold")
    assert base.model_dump(mode="json").keys().isdisjoint({"review_threshold", "target_review_rate"})

"""Tests for the inference engine: scoring synthetic parts, verdicts, masks, gallery/backbone agreement, batching."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from inspector.config.model import ModelConfig
from inspector.core.names import COMPUTE_STAGES as STAGE_NAMES
from inspector.demo.data import write_dataset
from inspector.model import gallery as gallery_module
from inspector.model.build import build_gallery, list_images
from inspector.model.digest import file_sha256
from inspector.model.engine import BackboneCache, EngineError, Inspector, ScoreResult, resolve_device
from inspector.model.gallery import load_gallery, save_gallery, update_calibration
from inspector.model.header import GalleryError
from inspector.model.manifest import median
from inspector.model.preprocess import read_image
from inspector.model.thresholds import calibrate_gallery
from tests.support import calibration_config as _calibration
from tests.support import runtime_config

SIZE_PX = 128
CROP_PX = 112
N_TRAIN = 12
BATCH_RTOL = 1e-4
CFG = ModelConfig.model_validate(
    {"resize_px": SIZE_PX, "crop_px": CROP_PX, "image_score": "map_max", "image_k": 5, "pixel_k": 5}
)
RUNTIME = runtime_config()
BACKBONES = BackboneCache()  # one Lite0 for the module


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("engine_data")
    return write_dataset(
        root, "part", n_train=N_TRAIN, n_test_good=4, n_test_per_defect=2, size_px=SIZE_PX, seed=11
    )


@pytest.fixture(scope="module")
def gallery(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("engine_gallery") / "part.safetensors"
    build_gallery(list_images(data / "train" / "good"), path, CFG, RUNTIME, backbones=BACKBONES)
    calibrate_gallery(path, RUNTIME, _calibration(), backbones=BACKBONES)
    return path


@pytest.fixture(scope="module")
def inspector(gallery: Path) -> Inspector:
    return Inspector.from_gallery(gallery, RUNTIME, backbones=BACKBONES)


def _tests(data: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    good = [read_image(p) for p in list_images(data / "test" / "good")]
    defects = [
        read_image(p) for d in sorted((data / "test").iterdir()) if d.name != "good" for p in list_images(d)
    ]
    return good, defects


def _with_calibration(inspector: Inspector, src: Path, dst: Path, **changes: float) -> Inspector:
    """The inspector's engine bound to a copy of its gallery with a threshold replaced (and, so that the
    calibration stays consistent and not degenerate, the recorded normal scores it comes from: the threshold
    once, the others one below it)."""
    shutil.copyfile(src, dst)
    cal = load_gallery(dst).manifest.calibration
    assert cal is not None
    record = {"image_threshold": "normal_scores", "pixel_threshold": "normal_map_max"}
    medians = {"image_threshold": "image_score_median", "pixel_threshold": "map_max_median"}
    update: dict[str, object] = {}
    for name, value in changes.items():
        scores = [value - 1.0] * (cal.n_images - 1) + [value]
        update |= {name: value, record[name]: scores, medians[name]: median(scores)}
    update_calibration(dst, cal.model_copy(update=update))
    return Inspector(inspector.engine, load_gallery(dst))


def test_scores_synthetic_parts_and_ranks_defects_above_good_parts(inspector: Inspector, data: Path) -> None:
    good, defects = _tests(data)
    results = inspector.score(good + defects)
    assert len(results) == len(good) + len(defects)
    for r in results:
        assert r.anomaly_map.shape == (CROP_PX, CROP_PX) and r.anomaly_map.dtype == np.float32
        assert r.crop.shape == (CROP_PX, CROP_PX, 3) and r.crop.dtype == np.uint8
        assert np.isfinite(r.score) and r.score == pytest.approx(r.map_max)  # map_max mode
        assert r.map_max == pytest.approx(float(r.anomaly_map.max()))
        assert r.knn_score > 0 and r.threshold == inspector.threshold
        assert set(r.timings_ms) == set(STAGE_NAMES) and all(v >= 0 for v in r.timings_ms.values())
    good_scores = [r.score for r in results[: len(good)]]
    defect_scores = [r.score for r in results[len(good) :]]
    assert min(defect_scores) > float(np.median(good_scores))
    assert np.mean(defect_scores) > max(good_scores)


def test_gray_and_bgr_copies_of_an_image_score_the_same(inspector: Inspector, data: Path) -> None:
    bgr = read_image(list_images(data / "test" / "good")[0])
    gray = bgr[:, :, 1].copy()
    as_bgr = np.repeat(gray[:, :, None], 3, axis=2)
    a, b = inspector.score([gray, as_bgr])
    assert a.score == b.score and np.array_equal(a.anomaly_map, b.anomaly_map)


def test_verdict_is_fail_exactly_when_score_is_above_threshold(
    inspector: Inspector, gallery: Path, data: Path, tmp_path: Path
) -> None:
    image = read_image(list_images(data / "test" / "good")[0])
    score = inspector.score([image])[0].score
    at = _with_calibration(inspector, gallery, tmp_path / "at.safetensors", image_threshold=score)
    # Scores are float32: the next float32 below the score is the largest threshold the score exceeds.
    just_below = float(np.nextafter(np.float32(score), np.float32(-np.inf)))
    below = _with_calibration(inspector, gallery, tmp_path / "below.safetensors", image_threshold=just_below)
    r_at, r_below = at.score([image])[0], below.score([image])[0]
    assert r_at.score == r_below.score == score
    assert (r_at.verdict, r_below.verdict) == ("PASS", "FAIL")
    results = inspector.score(list(_tests(data)[1]))
    assert all(r.verdict == ("FAIL" if r.score > r.threshold else "PASS") for r in results)


def _check_mask(r: ScoreResult, pixel_threshold: float) -> None:
    assert r.mask.dtype == np.uint8 and r.mask.shape == (CROP_PX, CROP_PX)
    assert set(np.unique(r.mask).tolist()) <= {0, 255}
    assert np.array_equal(r.mask == 255, r.anomaly_map > pixel_threshold)
    assert r.defect_area_px == int(np.count_nonzero(r.mask == 255))


def test_mask_is_0_or_255_and_area_counts_pixels_above_the_pixel_threshold(
    inspector: Inspector, gallery: Path, data: Path, tmp_path: Path
) -> None:
    cal = inspector.gallery.manifest.calibration
    assert cal is not None
    good, defects = _tests(data)
    results = inspector.score(good + defects)
    for r in results:
        _check_mask(r, cal.pixel_threshold)
    assert max(r.defect_area_px for r in results[len(good) :]) > 0
    everything = _with_calibration(inspector, gallery, tmp_path / "low.safetensors", pixel_threshold=-1.0)
    nothing = _with_calibration(inspector, gallery, tmp_path / "high.safetensors", pixel_threshold=1e9)
    assert everything.score(defects[:1])[0].defect_area_px == CROP_PX * CROP_PX
    assert nothing.score(defects[:1])[0].defect_area_px == 0


@pytest.fixture(scope="module")
def uncalibrated(inspector: Inspector, data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("uncalibrated") / "raw.safetensors"
    build_gallery(list_images(data / "train" / "good")[:3], path, CFG, RUNTIME, backbones=BACKBONES)
    return path


def test_uncalibrated_gallery_is_refused(inspector: Inspector, uncalibrated: Path) -> None:
    with pytest.raises(EngineError, match="not calibrated"):
        Inspector.from_gallery(uncalibrated, RUNTIME, backbones=BACKBONES)
    with pytest.raises(EngineError, match="not calibrated"):
        Inspector(inspector.engine, load_gallery(uncalibrated))
    assert Inspector(inspector.engine, load_gallery(uncalibrated), require_calibration=False).gallery


def test_uncalibrated_gallery_error_names_the_file(uncalibrated: Path) -> None:
    with pytest.raises(EngineError) as info:
        Inspector.from_gallery(uncalibrated, RUNTIME, backbones=BACKBONES)
    assert str(uncalibrated) in str(info.value)


def test_the_model_settings_come_from_the_gallery(inspector: Inspector) -> None:
    # Nothing but the run-time settings was given; the gallery's recorded settings decide everything else.
    assert inspector.config == CFG
    assert inspector.engine.prep.crop_px == CROP_PX


def test_galleries_with_other_sizes_share_one_backbone_from_the_cache(
    gallery: Path, data: Path, tmp_path: Path
) -> None:
    cache = BackboneCache()
    other = tmp_path / "other.safetensors"
    cfg = CFG.model_copy(update={"resize_px": 96, "crop_px": 96})
    build_gallery(list_images(data / "train" / "good")[:3], other, cfg, RUNTIME, backbones=cache)
    calibrate_gallery(other, RUNTIME, _calibration(), backbones=cache)
    a = Inspector.from_gallery(gallery, RUNTIME, backbones=cache)
    b = Inspector.from_gallery(other, RUNTIME, backbones=cache)
    assert len(cache) == 1 and a.engine.torch_extractor is b.engine.torch_extractor
    assert (a.config.crop_px, b.config.crop_px) == (CROP_PX, 96)


def test_from_gallery_reads_and_hashes_the_file_once(gallery: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = gallery_module.content_sha256

    def counting(tensors: dict[str, torch.Tensor]) -> str:
        calls.append(len(tensors))
        return real(tensors)

    monkeypatch.setattr(gallery_module, "content_sha256", counting)
    Inspector.from_gallery(gallery, RUNTIME, backbones=BACKBONES)
    assert len(calls) == 1


@pytest.fixture(scope="module")
def resnet18_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("resnet_weights")
    torch.manual_seed(0)
    state = torchvision.models.resnet18(weights=None).state_dict()
    first, second = folder / "resnet18_a.pth", folder / "resnet18_b.pth"
    torch.save(state, first)
    state["fc.bias"] = state["fc.bias"] + 1.0  # same architecture, different weights
    torch.save(state, second)
    return first, second


def test_lite0_gallery_relabelled_for_another_backbone_is_refused_for_its_preprocessing(
    gallery: Path, resnet18_files: tuple[Path, Path], tmp_path: Path
) -> None:
    src = load_gallery(gallery)
    relabelled = tmp_path / "relabelled.safetensors"
    manifest = src.manifest.model_copy(
        update={"backbone": "resnet18", "weights_sha256": file_sha256(resnet18_files[0])}
    )
    save_gallery(relabelled, src.pooled, src.stages, manifest)
    with pytest.raises(GalleryError) as info:
        Inspector.from_gallery(relabelled, runtime_config(weights={"resnet18": resnet18_files[0]}))
    text = str(info.value)
    assert str(relabelled) in text and "preprocessing mismatch" in text and "input_scale" in text


def test_gallery_built_with_other_weights_is_refused_naming_the_file(
    data: Path, resnet18_files: tuple[Path, Path], tmp_path: Path
) -> None:
    first, second = resnet18_files
    cfg = CFG.model_copy(update={"backbone": "resnet18"})
    runtime = runtime_config(weights={"resnet18": first})
    path = tmp_path / "r18.safetensors"
    build_gallery(list_images(data / "train" / "good")[:3], path, cfg, runtime)
    calibrate_gallery(path, runtime, _calibration())
    assert Inspector.from_gallery(path, runtime).engine.spec.name == "resnet18"
    with pytest.raises(GalleryError) as info:
        Inspector.from_gallery(path, runtime_config(weights={"resnet18": second}))
    assert str(path) in str(info.value) and "weights hash mismatch" in str(info.value)


def test_gallery_whose_feature_channels_do_not_fit_the_backbone_is_refused_at_load(
    gallery: Path, resnet18_files: tuple[Path, Path], tmp_path: Path
) -> None:
    """A manifest saying resnet18 (with resnet preprocessing) over Lite0-sized tensors must not load."""
    src = load_gallery(gallery)
    prep = src.manifest.preprocessing.model_copy(
        update={"input_scale": "imagenet", "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
    )
    manifest = src.manifest.model_copy(
        update={
            "backbone": "resnet18",
            "weights_sha256": file_sha256(resnet18_files[0]),
            "preprocessing": prep,
        }
    )
    path = tmp_path / "wrong_channels.safetensors"
    save_gallery(path, src.pooled, src.stages, manifest)
    with pytest.raises(GalleryError) as info:
        Inspector.from_gallery(path, runtime_config(weights={"resnet18": resnet18_files[0]}))
    assert str(path) in str(info.value)


def test_an_image_scores_the_same_alone_and_inside_a_batch_of_8(inspector: Inspector, data: Path) -> None:
    good, defects = _tests(data)
    target = defects[0]
    others = good + defects[1:]
    batch = others[:5] + [target] + others[5:7]
    assert len(batch) == 8
    alone = inspector.score([target])[0]
    inside = inspector.score(batch)[5]
    for name in ("score", "knn_score", "map_max"):
        a, b = getattr(alone, name), getattr(inside, name)
        assert b == pytest.approx(a, rel=BATCH_RTOL), name
    scale = float(np.abs(alone.anomaly_map).max())
    np.testing.assert_allclose(
        inside.anomaly_map, alone.anomaly_map, rtol=BATCH_RTOL, atol=BATCH_RTOL * scale
    )


def test_a_scorer_that_frees_the_stage_tensors_scores_exactly_the_same_and_holds_the_gallery_once(
    inspector: Inspector, gallery: Path, data: Path
) -> None:
    lean = Inspector.from_gallery(gallery, RUNTIME, backbones=BACKBONES, keep_stage_features=False)
    good, defects = _tests(data)
    for kept, freed in zip(inspector.score(good + defects), lean.score(good + defects), strict=True):
        assert freed.score == kept.score
        np.testing.assert_array_equal(freed.anomaly_map, kept.anomaly_map)
    assert lean.gallery.stages == {} and inspector.gallery.stages
    stage_bytes = sum(t.numel() * t.element_size() for t in inspector.gallery.stages.values())
    assert inspector.feature_bytes - lean.feature_bytes == stage_bytes
    assert lean.feature_bytes >= sum(b.nbytes for b in lean.banks.values()) > 0


def test_the_channels_last_backbone_gives_the_features_and_scores_of_the_contiguous_one(
    gallery: Path, data: Path
) -> None:
    fast = Inspector.from_gallery(gallery, runtime_config(channels_last=True), backbones=BACKBONES)
    plain = Inspector.from_gallery(gallery, runtime_config(channels_last=False), backbones=BACKBONES)
    assert fast.engine.torch_extractor is not plain.engine.torch_extractor  # one cached backbone per layout
    good, defects = _tests(data)
    images = good + defects
    feats_fast, _ = fast.engine.extract(images, {})
    feats_plain, _ = plain.engine.extract(images, {})
    for s, t in feats_plain.stages.items():
        assert feats_fast.stages[s].is_contiguous()
        torch.testing.assert_close(
            feats_fast.stages[s], t, rtol=BATCH_RTOL, atol=BATCH_RTOL * float(t.abs().max())
        )
    for a, b in zip(fast.score(images), plain.score(images), strict=True):
        assert a.score == pytest.approx(b.score, rel=BATCH_RTOL)


def test_letterboxed_gallery_leaves_padding_out_of_map_and_mask(data: Path, tmp_path: Path) -> None:
    cfg = CFG.model_copy(update={"keep_aspect": True})
    path = tmp_path / "letterbox.safetensors"
    build_gallery(list_images(data / "train" / "good")[:6], path, cfg, RUNTIME, backbones=BACKBONES)
    calibrate_gallery(path, RUNTIME, _calibration(), backbones=BACKBONES)
    insp = Inspector.from_gallery(path, RUNTIME, backbones=BACKBONES)
    wide = np.concatenate([read_image(p) for p in list_images(data / "test" / "stain")], axis=1)  # 2:1
    r = insp.score([wide])[0]
    # A 2:1 image letterboxed into SIZE_PX has SIZE_PX/2 content rows centred; the crop removes a margin.
    top = (SIZE_PX - SIZE_PX // 2) // 2 - (SIZE_PX - CROP_PX) // 2
    assert top > 0
    assert np.all(r.anomaly_map[:top] == 0) and np.all(r.anomaly_map[-top:] == 0)
    assert np.all(r.mask[:top] == 0) and np.all(r.mask[-top:] == 0)
    assert float(r.anomaly_map[top:-top].min()) > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_a_cuda_device_names_the_field() -> None:
    with pytest.raises(EngineError, match="runtime.device"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"

"""Tests for gallery building and calibration from normal images (leave-one-out and holdout), float16, errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from inspector.config.calibration import CalibrationConfig
from inspector.config.model import ModelConfig
from inspector.config.runtime import RuntimeConfig
from inspector.demo.data import write_dataset
from inspector.model.backbone import LITE0_WEIGHTS_SHA256
from inspector.model.build import BuildError, add_to_gallery, build_gallery, list_images
from inspector.model.calibration import threshold_at_rate, upper_bound
from inspector.model.digest import file_sha256
from inspector.model.engine import BackboneCache, FeatureEngine, Features, Inspector, calibrated_score_median
from inspector.model.gallery import Gallery, load_gallery, save_gallery
from inspector.model.manifest import Calibration
from inspector.model.preprocess import ImageReadError, Prepared, read_image
from inspector.model.thresholds import calibrate_gallery, calibration_steps, calibration_warning

SIZE_PX = 128
CROP_PX = 112
N_TRAIN = 12
N_HOLDOUT = 6
IMAGE_RATE = 0.2  # with 12 images: at most 2 leave-one-out scores may lie above the threshold
PIXEL_RATE = 0.1  # with 12 images: at most 1
MATCH_RTOL = 1e-4  # recomputed scores vs the calibration's own (batch composition only)
FP16_RTOL = 1e-3
CFG = ModelConfig.model_validate(
    {"resize_px": SIZE_PX, "crop_px": CROP_PX, "image_score": "map_max", "image_k": 4, "pixel_k": 4}
)
RUNTIME = RuntimeConfig()
BACKBONES = BackboneCache()  # one Lite0 for the module
CAL = CalibrationConfig.model_validate(
    {"target_false_reject_rate": IMAGE_RATE, "pixel_target_rate": PIXEL_RATE, "leave_out": "leave_one_out"}
)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("build_data")
    return write_dataset(
        root, "part", n_train=N_TRAIN, n_test_good=N_HOLDOUT, n_test_per_defect=1, size_px=SIZE_PX, seed=5
    )


@pytest.fixture(scope="module")
def engine() -> FeatureEngine:
    return FeatureEngine(CFG, RUNTIME, BACKBONES)


@pytest.fixture(scope="module")
def raw_gallery(data: Path, engine: FeatureEngine, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("build_gallery") / "raw.safetensors"
    build_gallery(list_images(data / "train" / "good"), path, CFG, RUNTIME, backbones=BACKBONES)
    return path


def _copy_in_mode(src: Path, dst: Path, mode: str) -> Path:
    """The same features with another image-score mode recorded (what building with that mode would give)."""
    g = load_gallery(src)
    spade = g.manifest.spade.model_copy(update={"image_score": mode})
    save_gallery(dst, g.pooled, g.stages, g.manifest.model_copy(update={"spade": spade}))
    return dst


def _assert_threshold_at_rate(threshold: float, scores: np.ndarray, rate: float) -> None:
    """threshold is (within MATCH_RTOL) one of the scores, at most rate of them lie above it, and it is the
    smallest such observed value: counting it too exceeds the rate."""
    tol = MATCH_RTOL * abs(threshold)
    n = scores.size
    assert np.min(np.abs(scores - threshold)) <= tol
    assert np.count_nonzero(scores > threshold + tol) <= rate * n
    assert np.count_nonzero(scores >= threshold - tol) > rate * n


@pytest.fixture(scope="module")
def train_features(data: Path, engine: FeatureEngine) -> list[tuple[Features, Prepared]]:
    """Each gallery image re-read from its file and passed through the backbone on its own."""
    return [engine.extract([read_image(p)], {}) for p in list_images(data / "train" / "good")]


@pytest.fixture(scope="module")
def calibrated(raw_gallery: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Leave-one-out calibrated copies of the gallery per image-score mode, made on first use."""
    folder = tmp_path_factory.mktemp("calibrated")

    class Lazy(dict[str, Path]):
        def __missing__(self, mode: str) -> Path:
            path = _copy_in_mode(raw_gallery, folder / f"{mode}.safetensors", mode)
            calibrate_gallery(path, RUNTIME, CAL, backbones=BACKBONES)
            self[mode] = path
            return path

    return Lazy()


def _recomputed_leave_one_out(
    engine: FeatureEngine,
    gallery: Gallery,
    queries: list[tuple[Features, Prepared]],
    cal: Calibration,
    left_out: list[set[int]] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each image scored against a gallery that really lacks it (and ``left_out[i]``, when given):
    (image scores, kNN scores, map maxima)."""
    scores, knn, maxima = [], [], []
    n = gallery.pooled.shape[0]
    for i, (feats, prepared) in enumerate(queries):
        out = left_out[i] if left_out else {i}
        keep = torch.tensor([j for j in range(n) if j not in out])
        without = Gallery(
            gallery.manifest, gallery.pooled[keep], {s: t[keep] for s, t in gallery.stages.items()}
        )
        insp = Inspector(engine_for(engine, gallery), without, require_calibration=False)
        raw = insp.raw_scores(feats, prepared.valid)
        scores.append(float(insp.combine(raw, cal)[0]))
        knn.append(float(raw.knn[0]))
        maxima.append(float(raw.map_max[0]))
    return np.array(scores), np.array(knn), np.array(maxima)


def engine_for(engine: FeatureEngine, gallery: Gallery) -> FeatureEngine:
    """The shared backbone with the gallery's recorded SPADE settings."""
    s = gallery.manifest.spade
    cfg = CFG.model_copy(update={"image_score": s.image_score, "image_k": s.image_k, "pixel_k": s.pixel_k})
    return FeatureEngine(cfg, RUNTIME, BACKBONES)


@pytest.mark.parametrize("mode", ["map_max", "knn_pooled"])
def test_leave_one_out_threshold_lets_at_most_the_target_rate_of_normal_scores_above_it(
    mode: str,
    engine: FeatureEngine,
    calibrated: dict[str, Path],
    train_features: list[tuple[Features, Prepared]],
) -> None:
    gallery = load_gallery(calibrated[mode])
    cal = gallery.manifest.calibration
    assert cal is not None and gallery.manifest.spade.image_score == mode
    assert (cal.method, cal.n_images) == ("leave_one_out", N_TRAIN)
    assert (cal.target_false_reject_rate, cal.pixel_target_rate) == (IMAGE_RATE, PIXEL_RATE)
    scores, knn, maxima = _recomputed_leave_one_out(engine, gallery, train_features, cal)
    _assert_threshold_at_rate(cal.image_threshold, scores, IMAGE_RATE)
    _assert_threshold_at_rate(cal.pixel_threshold, maxima, PIXEL_RATE)
    assert cal.map_max_median == pytest.approx(float(np.median(maxima)), rel=MATCH_RTOL)
    assert cal.score_median == pytest.approx(float(np.median(knn)), rel=MATCH_RTOL)
    # The drift gauges' reference: the median of the scores in the gallery's own mode.
    assert cal.image_score_median == pytest.approx(float(np.median(scores)), rel=MATCH_RTOL)
    assert calibrated_score_median(cal, mode) == cal.image_score_median
    older = cal.model_copy(update={"image_score_median": None})  # a gallery calibrated before it was recorded
    expected = {"map_max": cal.map_max_median, "knn_pooled": cal.score_median}[mode]
    assert calibrated_score_median(older, mode) == expected
    assert calibrated_score_median(older, "knn_plus_map") is None


def _nearest_by_pooled(gallery: Gallery, m: int) -> list[set[int]]:
    """Each image and its m nearest gallery images by pooled-feature distance (float64 brute force)."""
    x = gallery.pooled.double().numpy()
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    return [{i, *np.argsort(d[i], kind="stable")[:m].tolist()} for i in range(x.shape[0])]


@pytest.mark.parametrize(("leave_out", "m", "folds"), [("leave_m_out", 3, 5), ("k_fold", 5, 4)])
def test_leave_m_out_and_k_fold_score_each_image_against_a_gallery_that_really_lacks_what_they_leave_out(
    leave_out: str,
    m: int,
    folds: int,
    engine: FeatureEngine,
    raw_gallery: Path,
    train_features: list[tuple[Features, Prepared]],
    tmp_path: Path,
) -> None:
    path = shutil.copyfile(raw_gallery, tmp_path / f"{leave_out}.safetensors")
    cfg = CAL.model_copy(update={"leave_out": leave_out, "neighbours_left_out": m, "folds": folds})
    progress: list[int] = []
    cal = calibrate_gallery(path, RUNTIME, cfg, progress=progress.append, backbones=BACKBONES)
    assert (cal.method, cal.n_images) == (leave_out, N_TRAIN)
    assert (cal.neighbours_left_out, cal.folds) == (
        (m, None) if leave_out == "leave_m_out" else (None, folds)
    )
    assert sum(progress) == calibration_steps(N_TRAIN, CFG.stage_fusion) == 2 * N_TRAIN  # scale pass counted
    gallery = load_gallery(path)
    if leave_out == "leave_m_out":
        sets = _nearest_by_pooled(gallery, m)
    else:
        fold = [i * folds // N_TRAIN for i in range(N_TRAIN)]
        sets = [{j for j in range(N_TRAIN) if fold[j] == fold[i]} for i in range(N_TRAIN)]
    scores, _, maxima = _recomputed_leave_one_out(engine, gallery, train_features, cal, sets)
    _assert_threshold_at_rate(cal.image_threshold, scores, IMAGE_RATE)
    _assert_threshold_at_rate(cal.pixel_threshold, maxima, PIXEL_RATE)


def test_calibration_records_what_its_images_support_and_warns_when_too_few(
    calibrated: dict[str, Path],
) -> None:
    cal = load_gallery(calibrated["map_max"]).manifest.calibration
    assert cal is not None
    above = cal.normal_above_threshold
    assert above is not None and above <= IMAGE_RATE * N_TRAIN
    assert cal.images_needed == 14  # ceil(ln 0.05 / ln 0.8): zero failures in 14 images bound 20% at 95%
    assert cal.false_reject_upper_bound == pytest.approx(upper_bound(above, N_TRAIN))
    assert cal.empirical_threshold == cal.image_threshold and cal.tail == "empirical"
    warning = calibration_warning(cal)
    assert warning is not None and "12 normal images" in warning and "needs 14" in warning
    assert calibration_warning(cal.model_copy(update={"n_images": 14})) is None


@pytest.mark.parametrize("tail", ["gaussian", "pareto"])
def test_fitted_tail_thresholds_are_read_from_the_same_normal_scores(
    tail: str, raw_gallery: Path, calibrated: dict[str, Path], tmp_path: Path
) -> None:
    path = shutil.copyfile(raw_gallery, tmp_path / f"{tail}.safetensors")
    cal = calibrate_gallery(path, RUNTIME, CAL.model_copy(update={"tail": tail}), backbones=BACKBONES)
    empirical = load_gallery(calibrated["map_max"]).manifest.calibration
    assert empirical is not None and cal.tail == tail
    assert cal.empirical_threshold == pytest.approx(empirical.image_threshold, rel=MATCH_RTOL)
    assert cal.image_threshold != pytest.approx(empirical.image_threshold, rel=MATCH_RTOL)
    assert cal.tail_fraction == (CAL.tail_fraction if tail == "pareto" else None)
    assert cal.inconsistencies() == []  # a loader recomputes the fitted threshold from the recorded scores
    edited = cal.model_copy(update={"image_threshold": cal.image_threshold * 1.01})
    assert any("image_threshold" in p for p in edited.inconsistencies())


def test_holdout_calibration_scores_a_separate_normal_folder_against_the_whole_gallery(
    data: Path, engine: FeatureEngine, raw_gallery: Path, calibrated: dict[str, Path], tmp_path: Path
) -> None:
    path = shutil.copyfile(raw_gallery, tmp_path / "holdout.safetensors")
    normal = list_images(data / "test" / "good")
    progress: list[int] = []
    cal = calibrate_gallery(
        path, RUNTIME, CAL, normal_images=normal, progress=progress.append, backbones=BACKBONES
    )
    assert (cal.method, cal.n_images) == ("holdout", N_HOLDOUT)
    # the stage-scale pass counts, then every image
    assert sum(progress) == calibration_steps(N_HOLDOUT, CFG.stage_fusion) == 2 * N_HOLDOUT
    insp = Inspector(engine, load_gallery(path))
    results = insp.score([read_image(p) for p in normal])
    _assert_threshold_at_rate(cal.image_threshold, np.array([r.score for r in results]), IMAGE_RATE)
    _assert_threshold_at_rate(cal.pixel_threshold, np.array([r.map_max for r in results]), PIXEL_RATE)
    loo = load_gallery(calibrated["map_max"]).manifest.calibration
    assert (
        loo is not None and loo.image_threshold != cal.image_threshold
    )  # the holdout images, not the gallery, set it


def test_manifest_records_sources_backbone_and_shapes(data: Path, raw_gallery: Path) -> None:
    m = load_gallery(raw_gallery).manifest
    paths = list_images(data / "train" / "good")
    assert m.image_count == N_TRAIN and m.calibration is None
    assert [(s.name, s.sha256) for s in m.sources] == [(p.name, file_sha256(p)) for p in paths]
    assert (m.backbone, m.weights_sha256) == ("efficientnet_lite0", LITE0_WEIGHTS_SHA256)
    assert (m.preprocessing.resize_px, m.preprocessing.crop_px, m.preprocessing.keep_aspect) == (
        SIZE_PX,
        CROP_PX,
        True,
    )
    assert m.stage_shapes == {
        "pooled": [1280],
        "stage0": [24, CROP_PX // 4, CROP_PX // 4],
        "stage1": [40, CROP_PX // 8, CROP_PX // 8],
        "stage2": [112, CROP_PX // 16, CROP_PX // 16],
    }
    assert (m.spade.image_k, m.spade.pixel_k, m.spade.image_score) == (4, 4, "map_max")


def test_float16_gallery_is_half_the_size_and_scores_within_1e3_of_float32(
    data: Path, engine: FeatureEngine, raw_gallery: Path, calibrated: dict[str, Path], tmp_path: Path
) -> None:
    f16 = tmp_path / "f16.safetensors"
    progress: list[int] = []
    build_gallery(
        list_images(data / "train" / "good"),
        f16,
        CFG,
        RUNTIME,
        float16=True,
        progress=progress.append,
        backbones=BACKBONES,
    )
    assert sum(progress) == N_TRAIN
    f32 = calibrated["map_max"]
    assert 0.45 < f16.stat().st_size / f32.stat().st_size < 0.55
    assert load_gallery(f16).manifest.storage_dtype == "float16"
    cal16, cal32 = (
        calibrate_gallery(f16, RUNTIME, CAL, backbones=BACKBONES),
        load_gallery(f32).manifest.calibration,
    )
    assert cal32 is not None
    assert cal16.image_threshold == pytest.approx(cal32.image_threshold, rel=FP16_RTOL)
    assert cal16.pixel_threshold == pytest.approx(cal32.pixel_threshold, rel=FP16_RTOL)
    tests = [read_image(p) for d in sorted((data / "test").iterdir()) for p in list_images(d)]
    r16 = Inspector(engine, load_gallery(f16)).score(tests)
    r32 = Inspector(engine, load_gallery(f32)).score(tests)
    for a, b in zip(r16, r32, strict=True):
        assert a.score == pytest.approx(b.score, rel=FP16_RTOL)
        assert a.knn_score == pytest.approx(b.knn_score, rel=FP16_RTOL)


def test_unreadable_image_in_the_gallery_folder_is_an_error_naming_it(
    data: Path, engine: FeatureEngine, tmp_path: Path
) -> None:
    folder = tmp_path / "good"
    shutil.copytree(data / "train" / "good", folder)
    bad = folder / "005_broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n but then nothing sensible")
    with pytest.raises(ImageReadError) as info:
        build_gallery(list_images(folder), tmp_path / "g.safetensors", CFG, RUNTIME, backbones=BACKBONES)
    assert str(bad) in str(info.value)
    assert not (tmp_path / "g.safetensors").exists()


def test_list_images_sorts_filters_by_suffix_and_names_bad_folders(tmp_path: Path) -> None:
    for name in ("b.PNG", "a.jpg", "c.bmp", "notes.txt", "d.tiff", "e.webp", "f.pgm"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.png").mkdir()
    # The same suffixes as a folder camera reads (one list: inspector.core.names.IMAGE_SUFFIXES).
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG", "c.bmp", "d.tiff", "e.webp", "f.pgm"]
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images")
    for folder, reason in ((empty, "no images"), (tmp_path / "missing", "not a folder")):
        with pytest.raises(BuildError) as info:
            list_images(folder)
        assert str(folder) in str(info.value) and reason in str(info.value)


def test_gallery_needs_at_least_two_images(data: Path, engine: FeatureEngine, tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="at least 2"):
        build_gallery(
            list_images(data / "train" / "good")[:1],
            tmp_path / "g.safetensors",
            CFG,
            RUNTIME,
            backbones=BACKBONES,
        )


@pytest.mark.parametrize("rate", [0.01, 0.05, 0.1, 0.25, 0.49])
@pytest.mark.parametrize("n", [1, 7, 20, 101])
def test_threshold_at_rate_is_the_smallest_value_with_at_most_rate_above(rate: float, n: int) -> None:
    values = np.random.default_rng(n).normal(size=n).astype(np.float32)
    values[: n // 3] = values[0]  # ties
    t = threshold_at_rate(values, rate)
    assert t in values
    assert np.count_nonzero(values > t) <= rate * n
    smaller = values[values < t]
    if smaller.size:
        assert np.count_nonzero(values > smaller.max()) > rate * n


def test_gallery_add_grows_the_gallery_refuses_duplicates_and_recalibrates(
    data: Path, raw_gallery: Path, tmp_path: Path
) -> None:
    path = Path(shutil.copyfile(raw_gallery, tmp_path / "grow.safetensors"))
    calibrate_gallery(path, RUNTIME, CAL, backbones=BACKBONES)
    before = load_gallery(path)
    new = list_images(data / "test" / "good")
    again = list_images(data / "train" / "good")[:2]  # already in the gallery
    twin = tmp_path / "twin.png"
    shutil.copyfile(new[0], twin)  # the same bytes twice in one call
    result = add_to_gallery(path, [*new, *again, twin], RUNTIME, progress=None, backbones=BACKBONES)
    # no targets given: the ones recorded (leave-one-out here, not the config's default), kept
    after = load_gallery(path)
    assert after.manifest.image_count == before.manifest.image_count + len(new) == N_TRAIN + N_HOLDOUT
    assert result.added == new
    assert {p for p, _ in result.duplicates} == {*again, twin}
    assert dict(result.duplicates)[twin] == new[0].name
    assert [s.name for s in after.manifest.sources][-len(new) :] == [p.name for p in new]
    assert torch.equal(after.pooled[:N_TRAIN], before.pooled)  # the old rows are unchanged
    cal = after.manifest.calibration
    assert cal is not None and before.manifest.calibration is not None
    assert (cal.n_images, cal.method) == (N_TRAIN + N_HOLDOUT, "leave_one_out")
    assert cal.target_false_reject_rate == before.manifest.calibration.target_false_reject_rate  # kept
    assert cal.image_threshold != before.manifest.calibration.image_threshold
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grow.safetensors", "twin.png"]  # no staging left


def test_gallery_add_with_nothing_new_is_an_error_and_leaves_the_file_unchanged(
    raw_gallery: Path, data: Path, tmp_path: Path
) -> None:
    path = Path(shutil.copyfile(raw_gallery, tmp_path / "same.safetensors"))
    original = path.read_bytes()
    with pytest.raises(BuildError, match="no new image"):
        add_to_gallery(path, list_images(data / "train" / "good")[:3], RUNTIME, backbones=BACKBONES)
    assert path.read_bytes() == original

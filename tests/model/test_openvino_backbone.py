"""The OpenVINO backbone: float32 pinned, checked against torch at load, refused (torch runs) when it differs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from inspector.config.model import ModelConfig
from inspector.demo.data import write_dataset
from inspector.model import openvino_backbone
from inspector.model.build import build_gallery, list_images
from inspector.model.engine import BackboneCache, EngineError, FeatureEngine, Inspector, wants_openvino
from inspector.model.preprocess import read_image
from inspector.model.thresholds import calibrate_gallery
from tests.support import calibration_config, runtime_config

pytest.importorskip("openvino")

SIZE_PX = 96
CROP_PX = 80
CFG = ModelConfig.model_validate(
    {"resize_px": SIZE_PX, "crop_px": CROP_PX, "image_score": "map_max", "image_k": 3, "pixel_k": 3}
)
FEATURE_RTOL = 1e-4  # the load-time check's bound, per output, relative to its largest value
SCORE_RTOL = 1e-4


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("openvino_cache")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("openvino_data")
    return write_dataset(root, "part", n_train=6, n_test_good=2, n_test_per_defect=1, size_px=SIZE_PX, seed=5)


def _engine(runtime: str, cache_dir: Path, cache: BackboneCache | None = None) -> FeatureEngine:
    rt = runtime_config(device="cpu", backbone_runtime=runtime, openvino_cache_dir=cache_dir)
    return FeatureEngine(CFG, rt, cache if cache is not None else BackboneCache())


def _images(data: Path) -> list[np.ndarray]:
    return [read_image(p) for p in sorted((data / "test").rglob("*.png"))]


def test_openvino_features_equal_torchs_within_1e4_and_precision_is_float32(
    data: Path, cache_dir: Path
) -> None:
    ov = _engine("openvino", cache_dir)
    pt = _engine("torch", cache_dir)
    assert (ov.backbone_runtime, pt.backbone_runtime) == ("openvino", "torch")
    assert isinstance(ov.extractor, openvino_backbone.OpenVinoExtractor)
    assert ov.extractor.conversion.probe_rel_diff <= openvino_backbone.PROBE_REL_TOL
    summary = ov.runtime_summary
    assert summary["fallback"] is False and summary["probe_rel_diff"] == pytest.approx(
        ov.extractor.conversion.probe_rel_diff, rel=1e-2
    )
    images = _images(data)
    got, _ = ov.extract(images, {})
    want, _ = pt.extract(images, {})
    for g, w in zip([got.pooled, *got.stages.values()], [want.pooled, *want.stages.values()], strict=True):
        assert float((g - w).abs().max()) <= FEATURE_RTOL * float(w.abs().max())


def test_scores_with_the_openvino_backbone_equal_torchs(data: Path, cache_dir: Path, tmp_path: Path) -> None:
    rt_torch = runtime_config(device="cpu", backbone_runtime="torch")
    path = tmp_path / "part.safetensors"
    build_gallery(list_images(data / "train" / "good"), path, CFG, rt_torch)
    calibrate_gallery(path, rt_torch, calibration_config())
    rt_ov = runtime_config(device="cpu", backbone_runtime="openvino", openvino_cache_dir=cache_dir)
    with_ov = Inspector.from_gallery(path, rt_ov)
    with_torch = Inspector.from_gallery(path, rt_torch)
    assert with_ov.engine.backbone_runtime == "openvino"
    images = _images(data)
    a, b = with_ov.score(images), with_torch.score(images)
    np.testing.assert_allclose([r.score for r in a], [r.score for r in b], rtol=SCORE_RTOL)
    assert [r.verdict for r in a] == [r.verdict for r in b]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(
            x.anomaly_map, y.anomaly_map, rtol=1e-3, atol=1e-3 * float(y.anomaly_map.max())
        )


def test_a_backbone_that_differs_from_torch_is_refused_with_the_reason_and_torch_runs(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(openvino_backbone, "PROBE_REL_TOL", 0.0)  # any rounding difference now refuses it
    engine = _engine("openvino", cache_dir)
    assert engine.backbone_runtime == "torch"
    assert engine.extractor is engine.torch_extractor
    assert "differ from torch's" in engine.backbone_note and "probe image" in engine.backbone_note
    summary = engine.runtime_summary
    assert summary["fallback"] is True and summary["backbone_runtime"] == "torch"
    assert summary["backbone_note"] == engine.backbone_note  # the daemon logs it as a warning at start-up


def test_the_converted_model_is_kept_in_the_cache_directory_and_a_corrupt_one_converted_again(
    tmp_path: Path,
) -> None:
    first = _engine("openvino", tmp_path)
    assert isinstance(first.extractor, openvino_backbone.OpenVinoExtractor)
    assert not first.extractor.conversion.cached
    (xml,) = tmp_path.glob("*.xml")
    second = _engine("openvino", tmp_path)
    assert (
        isinstance(second.extractor, openvino_backbone.OpenVinoExtractor)
        and second.extractor.conversion.cached
    )
    xml.write_text("<not a model")
    third = _engine("openvino", tmp_path)
    assert isinstance(third.extractor, openvino_backbone.OpenVinoExtractor)
    assert not third.extractor.conversion.cached and third.backbone_runtime == "openvino"
    assert xml.read_text().startswith("<?xml")  # replaced by the new conversion


def test_an_input_of_another_size_runs_on_torch(cache_dir: Path) -> None:
    engine = _engine("openvino", cache_dir)
    x = torch.randn(2, 3, CROP_PX + 16, CROP_PX + 16)
    pooled, stages = engine.extractor(x)
    with torch.inference_mode():
        want, _ = engine.torch_extractor(x)
    assert torch.equal(pooled, want) and len(stages) == 3


def test_auto_picks_openvino_on_cpu_and_torch_on_cuda_and_openvino_on_cuda_is_refused() -> None:
    assert wants_openvino("auto", torch.device("cpu"))
    assert not wants_openvino("auto", torch.device("cuda"))
    assert not wants_openvino("torch", torch.device("cpu"))
    with pytest.raises(EngineError, match="backbone_runtime: openvino runs on CPU only"):
        wants_openvino("openvino", torch.device("cuda"))


def test_the_default_cache_directory_is_the_systemd_state_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path}/a:{tmp_path}/b")
    assert openvino_backbone.default_cache_dir() == tmp_path / "a" / "openvino"
    monkeypatch.delenv("STATE_DIRECTORY")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert openvino_backbone.default_cache_dir() == tmp_path / "xdg" / "inspector" / "openvino"

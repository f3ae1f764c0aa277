"""Tests for inspector.daemon.worker: real galleries and backbone scoring real video frames into outcomes."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest

from inspector.config.camera import CameraConfig
from inspector.config.products import ProductConfig
from inspector.config.root import InspectorConfig
from inspector.core.names import COMPUTE_STAGES as ENGINE_STAGES
from inspector.core.records import NO_IMAGE, CropBox, Frame
from inspector.daemon.products import ProductRegistry, Scorer
from inspector.daemon.worker import ModelWorker
from inspector.demo.data import read_video_frames
from inspector.model.engine import BackboneCache, Inspector, ScoreResult
from inspector.model.gallery import load_gallery
from tests.support import LabelledVideo, SyntheticGallery, build_synthetic_gallery, load_registry

CROP_PX = 128


def config_for(products: dict[str, Path], cameras: dict[str, str]) -> InspectorConfig:
    """Cameras (name -> product) on products (name -> gallery)."""
    return InspectorConfig(
        products=[ProductConfig(name=n, gallery=g) for n, g in products.items()],
        cameras=[CameraConfig(name=name, source="0", product=product) for name, product in cameras.items()],
    )


def to_frames(images: list[np.ndarray], camera: str) -> list[Frame]:
    return [
        Frame(camera=camera, seq=i, captured_at=time.time(), monotonic_at=time.monotonic(), image=img)
        for i, img in enumerate(images)
    ]


@pytest.fixture(scope="module")
def worker(synthetic_gallery: SyntheticGallery) -> ModelWorker:
    return ModelWorker(load_registry(config_for({"flange": synthetic_gallery.path}, {"cam1": "flange"})))


def test_frames_get_the_verdict_their_label_implies_with_complete_outcomes(
    worker: ModelWorker, synthetic_gallery: SyntheticGallery, labelled_video: LabelledVideo
) -> None:
    video, labels = labelled_video("line", 8, seed=3)
    frames = to_frames(read_video_frames(video), "cam1")
    result = worker.score(frames)
    assert [(o.camera, o.seq, o.frame.product) for o in result.outcomes] == [
        ("cam1", f.seq, "flange") for f in frames
    ]
    assert [o.verdict for o in result.outcomes] == ["PASS" if lab is None else "FAIL" for lab in labels]
    manifest = load_gallery(synthetic_gallery.path).manifest
    calibration = manifest.calibration
    assert calibration is not None
    sources = {s.name for s in manifest.sources}
    for o in result.outcomes:
        assert (o.camera, o.seq, o.gallery) == ("cam1", o.frame.seq, synthetic_gallery.content_hash)
        assert o.threshold == pytest.approx(calibration.image_threshold)
        assert o.pixel_threshold == pytest.approx(calibration.pixel_threshold)
        assert o.score is not None and o.threshold is not None
        assert (o.score > o.threshold) == (o.verdict == "FAIL")
        assert set(o.latency_ms) == {"queue", *ENGINE_STAGES}  # encode and end_to_end are the publisher's
        assert o.anomaly_map is not None and o.anomaly_map.shape == (CROP_PX, CROP_PX)
        assert o.mask is not None and np.array_equal(
            o.mask == 255, o.anomaly_map > calibration.pixel_threshold
        )
        assert o.crop is not None and o.crop.shape == (CROP_PX, CROP_PX, 3)
        assert (o.defect_area_px or 0) > 0 if o.verdict == "FAIL" else o.defect_area_px == 0
        assert o.error is None
        assert o.crop_box == CropBox(16.0, 16.0, 144.0, 144.0, CROP_PX)  # 160 px squashed to 160, centre 128
        assert len(o.neighbours) == synthetic_gallery.model.pixel_k
        assert set(o.neighbours) <= sources and o.published is None  # the bus sink stamps published
    assert set(result.stage_seconds) == set(ENGINE_STAGES)
    products = load_registry(config_for({"flange": synthetic_gallery.path}, {"cam1": "flange"}))
    assert products.calibration_of("flange") == (calibration.image_threshold, calibration.map_max_median)


def test_unscorable_frame_gets_error_with_reason_and_the_rest_of_its_batch_is_scored(
    worker: ModelWorker, labelled_video: LabelledVideo
) -> None:
    video, _ = labelled_video("line", 3, seed=3)
    images = read_video_frames(video)
    broken = np.zeros((*images[0].shape[:2], 5), np.uint8)  # the right size, five channels: refused later
    frames = to_frames([images[0], broken, images[1], images[2]], "cam1")
    outcomes = worker.score(frames).outcomes
    assert [o.frame.seq for o in outcomes] == [0, 1, 2, 3]
    assert [o.verdict for o in outcomes] == ["PASS", "ERROR", "PASS", "PASS"]
    error = outcomes[1]
    assert error.error is not None and "scoring failed" in error.error and "shape" in error.error
    assert error.score is None and error.anomaly_map is None and error.mask is None
    assert worker.busy_for_s() == 0.0


class NanScorer:
    """A scorer whose scores are NaN (a broken model): ``NaN > threshold`` is False, so it would PASS."""

    def __init__(self, real: Scorer) -> None:
        self.gallery, self.config, self._real = real.gallery, real.config, real
        self.feature_bytes = real.feature_bytes

    def score(self, images: list[np.ndarray]) -> list[ScoreResult]:
        return [dataclasses.replace(r, score=float("nan"), verdict="PASS") for r in self._real.score(images)]


def test_a_score_that_is_not_a_number_is_an_error_never_a_pass(
    synthetic_gallery: SyntheticGallery, labelled_video: LabelledVideo
) -> None:
    config = config_for({"flange": synthetic_gallery.path}, {"cam1": "flange"})
    real = load_registry(config).scorer("flange")
    broken = ProductRegistry(
        {"flange": synthetic_gallery.path}, {"flange": NanScorer(real)}, {"cam1": "flange"}
    )
    video, _ = labelled_video("line", 2, seed=3)
    outcomes = ModelWorker(broken).score(to_frames(read_video_frames(video), "cam1")).outcomes
    assert [o.verdict for o in outcomes] == ["ERROR", "ERROR"]
    assert all(o.error is not None and "not a finite number" in o.error for o in outcomes)


def test_timeout_outcome_carries_reason_and_queue_latency_but_no_score(worker: ModelWorker) -> None:
    frame = to_frames([np.zeros((16, 16, 3), np.uint8)], "cam1")[0]
    o = worker.failure(frame, "TIMEOUT", "deadline_ms exceeded")
    assert (o.verdict, o.error, o.score, o.threshold, o.mask) == (
        "TIMEOUT",
        "deadline_ms exceeded",
        None,
        None,
        None,
    )
    assert o.latency_ms["queue"] >= 0.0 and o.gallery is not None


def test_each_frame_is_scored_against_its_product_and_galleries_share_the_backbone(
    synthetic_gallery: SyntheticGallery, labelled_video: LabelledVideo, tmp_path: Path
) -> None:
    other = build_synthetic_gallery(tmp_path / "other", 6, seed=11)
    cfg = config_for({"a": synthetic_gallery.path, "b": other.path}, {"cam1": "a", "cam2": "b", "cam3": "a"})
    backbones = BackboneCache()
    products = load_registry(cfg, backbones)
    assert products.scorer("a") is not products.scorer("b")
    # One network for both galleries instead of loading it twice.
    assert len(backbones) == 1
    extractors = {id(s.engine.extractor) for s in map(products.scorer, "ab") if isinstance(s, Inspector)}
    assert len(extractors) == 1
    video, _ = labelled_video("line", 2, seed=3)
    images = read_video_frames(video)
    switched = [dataclasses.replace(f, product="b") for f in to_frames(images, "cam3")]
    mixed = [*to_frames(images, "cam1"), *to_frames(images, "cam2"), *switched]
    outcomes = ModelWorker(products).score(mixed).outcomes
    assert [o.camera for o in outcomes] == ["cam1", "cam1", "cam2", "cam2", "cam3", "cam3"]
    assert [o.frame.product for o in outcomes] == ["a", "a", "b", "b", "b", "b"]
    a, b = synthetic_gallery.content_hash, other.content_hash
    assert [o.gallery for o in outcomes] == [a, a, b, b, b, b]
    assert outcomes[0].threshold != outcomes[2].threshold


def test_a_fault_frame_and_an_unknown_product_become_error_outcomes_in_their_place(
    worker: ModelWorker, labelled_video: LabelledVideo
) -> None:
    video, _ = labelled_video("line", 3, seed=3)
    good, faulty, unknown = to_frames(read_video_frames(video), "cam1")
    faulty = dataclasses.replace(faulty, image=NO_IMAGE, fault="no frame within trigger_timeout_ms")
    unknown = dataclasses.replace(unknown, product="nope")
    outcomes = worker.score([good, faulty, unknown]).outcomes
    assert [(o.seq, o.verdict) for o in outcomes] == [(0, "PASS"), (1, "ERROR"), (2, "ERROR")]
    assert outcomes[1].error == "no frame within trigger_timeout_ms" and outcomes[1].frame.product == "flange"
    assert outcomes[2].error is not None and "unknown product 'nope'" in outcomes[2].error


def test_a_frame_whose_size_is_not_the_gallerys_is_an_error_naming_both_sizes(
    worker: ModelWorker, labelled_video: LabelledVideo
) -> None:
    video, _ = labelled_video("sizes", 2, seed=4)
    image = read_video_frames(video)[0]
    height, width = image.shape[:2]
    wide = np.zeros((height, width * 2, 3), np.uint8)
    tiny = np.zeros((10, 20, 3), np.uint8)
    outcomes = worker.score(to_frames([image, wide, tiny], "cam1")).outcomes
    assert outcomes[0].verdict in ("PASS", "FAIL")
    for o, (w, h) in zip(outcomes[1:], ((width * 2, height), (20, 10)), strict=True):
        assert o.verdict == "ERROR" and o.score is None
        assert o.error is not None and o.error.startswith(
            f"frame size {w}x{h} px does not match the gallery's images ({width}x{height} px, +/-10%)"
        )

"""Tests for inspector.worker: real galleries and backbone scoring real video frames into verdict messages."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from conftest import LabelledVideo, SyntheticGallery, build_synthetic_gallery

from inspector.capture import CameraConfig, Frame
from inspector.config import InspectorConfig, WorkerConfig
from inspector.demo_data import read_video_frames
from inspector.engine import STAGE_NAMES as ENGINE_STAGES
from inspector.engine import Inspector
from inspector.gallery import load_gallery
from inspector.wire import decode_mask
from inspector.worker import ModelWorker, load_scorers

CROP_PX = 128


def config_for(gallery: Path, cameras: dict[str, Path | None]) -> InspectorConfig:
    cams = [CameraConfig(name=name, source="0", gallery=own) for name, own in cameras.items()]
    return InspectorConfig(cameras=cams, worker=WorkerConfig(gallery=gallery))


def to_frames(images: list[np.ndarray], camera: str) -> list[Frame]:
    return [
        Frame(camera=camera, seq=i, captured_at=time.time(), monotonic_at=time.monotonic(), image=img)
        for i, img in enumerate(images)
    ]


@pytest.fixture(scope="module")
def worker(synthetic_gallery: SyntheticGallery) -> ModelWorker:
    return ModelWorker(load_scorers(config_for(synthetic_gallery.path, {"cam1": None})), "anomaly_map")


def test_frames_get_the_verdict_their_label_implies_with_complete_headers(
    worker: ModelWorker, synthetic_gallery: SyntheticGallery, labelled_video: LabelledVideo
) -> None:
    video, labels = labelled_video("line", 8, seed=3)
    frames = to_frames(read_video_frames(video), "cam1")
    result = worker.score(frames)
    assert [o.frame for o in result.outcomes] == frames
    assert [o.header.verdict for o in result.outcomes] == [
        "PASS" if lab is None else "FAIL" for lab in labels
    ]
    calibration = load_gallery(synthetic_gallery.path).manifest.calibration
    assert calibration is not None
    for outcome in result.outcomes:
        h = outcome.header
        assert (h.camera, h.seq, h.gallery) == ("cam1", outcome.frame.seq, synthetic_gallery.content_hash)
        assert h.threshold == pytest.approx(calibration.image_threshold)
        assert h.score is not None and (h.score > h.threshold) == (h.verdict == "FAIL")
        assert set(h.latency_ms) == {"queue", "encode", *ENGINE_STAGES}
        mask = decode_mask(outcome.mask, h.mask)
        assert mask is not None and mask.shape == (CROP_PX, CROP_PX)
        assert (h.defect_area_px or 0) > 0 if h.verdict == "FAIL" else h.defect_area_px == 0
    assert set(result.stage_seconds) == set(ENGINE_STAGES)


def test_unscorable_frame_gets_error_with_reason_and_the_rest_of_its_batch_is_scored(
    worker: ModelWorker, labelled_video: LabelledVideo
) -> None:
    video, _ = labelled_video("line", 3, seed=3)
    images = read_video_frames(video)
    broken = np.zeros((8, 8, 5), np.uint8)  # five channels: preprocessing refuses it
    frames = to_frames([images[0], broken, images[1], images[2]], "cam1")
    outcomes = worker.score(frames).outcomes
    assert [o.frame.seq for o in outcomes] == [0, 1, 2, 3]
    assert [o.header.verdict for o in outcomes] == ["PASS", "ERROR", "PASS", "PASS"]
    error = outcomes[1].header
    assert error.error is not None and "scoring failed" in error.error and "shape" in error.error
    assert error.score is None and outcomes[1].mask == b"" and error.mask.encoding == "none"
    assert worker.busy_for_s() == 0.0


def test_timeout_outcome_carries_reason_and_queue_latency_but_no_score(worker: ModelWorker) -> None:
    frame = to_frames([np.zeros((16, 16, 3), np.uint8)], "cam1")[0]
    outcome = worker.failure(frame, "TIMEOUT", "deadline_ms exceeded")
    h = outcome.header
    assert (h.verdict, h.error, h.score, h.threshold) == ("TIMEOUT", "deadline_ms exceeded", None, None)
    assert h.latency_ms["queue"] >= 0.0 and outcome.mask == b""


def test_each_camera_is_scored_against_its_own_gallery(
    synthetic_gallery: SyntheticGallery, labelled_video: LabelledVideo, tmp_path: Path
) -> None:
    other = build_synthetic_gallery(tmp_path / "other", 6, seed=11)
    cfg = config_for(synthetic_gallery.path, {"a": None, "b": other.path, "c": None})
    scorers = load_scorers(cfg)
    assert scorers["a"] is scorers["c"] and scorers["a"] is not scorers["b"]
    # Same model settings: the two galleries share one backbone instead of loading it twice.
    engines = {id(s.engine) for s in scorers.values() if isinstance(s, Inspector)}
    assert len(engines) == 1
    video, _ = labelled_video("line", 2, seed=3)
    images = read_video_frames(video)
    mixed = [*to_frames(images, "a"), *to_frames(images, "b")]
    outcomes = ModelWorker(scorers, "none").score(mixed).outcomes
    assert [o.frame.camera for o in outcomes] == ["a", "a", "b", "b"]
    galleries = [o.header.gallery for o in outcomes]
    assert galleries == [synthetic_gallery.content_hash] * 2 + [other.content_hash] * 2
    thresholds = {o.header.camera: o.header.threshold for o in outcomes}
    assert thresholds["a"] != thresholds["b"]
    assert all(o.mask == b"" and o.header.mask.encoding == "none" for o in outcomes)


def test_binary_mask_mode_sends_a_0_255_defect_mask(
    synthetic_gallery: SyntheticGallery, labelled_video: LabelledVideo
) -> None:
    scorers = load_scorers(config_for(synthetic_gallery.path, {"cam1": None}))
    worker = ModelWorker(scorers, "binary")
    worker.warm_up(2)
    video, labels = labelled_video("line", 4, seed=3)
    outcomes = worker.score(to_frames(read_video_frames(video), "cam1")).outcomes
    defective = next(o for o, lab in zip(outcomes, labels, strict=True) if lab is not None)
    mask = decode_mask(defective.mask, defective.header.mask)
    assert defective.header.mask.kind == "binary" and mask is not None
    assert set(np.unique(mask).tolist()) == {0, 255}
    assert int(np.count_nonzero(mask)) == defective.header.defect_area_px

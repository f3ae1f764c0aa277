"""Memory-bank galleries and inspection regions end to end in the model layer: build, store, calibrate, score."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from inspector.config.model import ModelConfig
from inspector.demo.data import write_dataset
from inspector.model.bank import MemoryBank, bank_maps
from inspector.model.build import BuildError, add_to_gallery, build_gallery, list_images
from inspector.model.engine import BackboneCache, Features, Inspector
from inspector.model.gallery import load_gallery
from inspector.model.header import GalleryError
from inspector.model.preprocess import read_image
from inspector.model.regions import RegionError
from inspector.model.thresholds import calibrate_gallery
from tests.support import calibration_config, paste_defect, runtime_config

SIZE_PX = 128
N_TRAIN = 10
CFG = ModelConfig.model_validate(
    {"resize_px": SIZE_PX, "image_score": "map_max", "image_k": 4, "pixel_k": 4, "pixel_search": "memory_bank",
     "coreset_fraction": 0.25, "neighbourhood_px": 1, "stage_fusion": "mean"}
)  # fmt: skip
RUNTIME = runtime_config()
BACKBONES = BackboneCache()
CAL = calibration_config(target_false_reject_rate=0.1, pixel_target_rate=0.1)
BLOB_AT = (40, 64)  # (x, y) of the pasted defect in the left half; mirrored to the right half


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bank_data")
    return write_dataset(
        root, "part", n_train=N_TRAIN, n_test_good=3, n_test_per_defect=1, size_px=SIZE_PX, seed=2
    )


@pytest.fixture(scope="module")
def right_half(tmp_path_factory: pytest.TempPathFactory) -> Path:
    mask = np.zeros((SIZE_PX, SIZE_PX), np.uint8)
    mask[:, SIZE_PX // 2 :] = 255  # inspect the right half, ignore the left
    path = tmp_path_factory.mktemp("region") / "right_half.png"
    assert cv2.imwrite(str(path), mask)
    return path


@pytest.fixture(scope="module")
def gallery(data: Path, right_half: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bank_gallery") / "bank.safetensors"
    done: list[int] = []
    build_gallery(
        list_images(data / "train" / "good"), path, CFG, RUNTIME, backbones=BACKBONES, region_mask=right_half,
        coreset_progress=done.append,
    )  # fmt: skip
    assert sum(done) == N_TRAIN * len(CFG.stages)
    calibrate_gallery(path, RUNTIME, CAL, backbones=BACKBONES)
    return path


@pytest.fixture(scope="module")
def inspector(gallery: Path) -> Inspector:
    return Inspector.from_gallery(gallery, RUNTIME, backbones=BACKBONES)


def test_the_gallery_stores_its_coreset_grouped_by_image_and_its_region(gallery: Path) -> None:
    g = load_gallery(gallery)
    record = g.manifest.memory_bank
    assert (
        record is not None and record.coreset_fraction == 0.25 and g.manifest.spade.coreset_fraction == 0.25
    )
    for s in CFG.stages:
        counts = record.rows_per_image[f"stage{s}"]
        locations = g.stages[s].shape[2] * g.stages[s].shape[3]
        assert len(counts) == N_TRAIN and g.banks[s].shape == (sum(counts), g.stages[s].shape[1])
        assert sum(counts) == pytest.approx(N_TRAIN * locations * 0.25, abs=len(counts))
    assert g.region is not None and g.region.shape == (SIZE_PX, SIZE_PX)
    assert g.manifest.region is not None and g.manifest.region.name == "right_half.png"
    assert (
        float(g.region[:, : SIZE_PX // 2 - 1].sum()) == 0
        and float(g.region[:, SIZE_PX // 2 + 1 :].min()) == 1
    )


def _metadata(path: Path) -> tuple[int, dict[str, object]]:
    raw = path.read_bytes()
    size = struct.unpack("<Q", raw[:8])[0]
    return size, json.loads(raw[8 : 8 + size])


def test_the_region_and_the_bank_are_covered_by_the_content_and_gallery_hashes(
    gallery: Path, tmp_path: Path
) -> None:
    size, header = _metadata(gallery)
    start, _ = header["region"]["data_offsets"]  # type: ignore[index]
    raw = bytearray(gallery.read_bytes())
    raw[8 + size + start : 8 + size + start + 4] = struct.pack("<f", 1.0)  # one ignored pixel made inspected
    changed = tmp_path / "region_edited.safetensors"
    changed.write_bytes(bytes(raw))
    with pytest.raises(GalleryError, match="content hash mismatch"):
        load_gallery(changed)
    text = gallery.read_bytes()
    seeded = text.replace(b'\\"seed\\":0', b'\\"seed\\":1', 1)
    assert seeded != text
    (tmp_path / "seed_edited.safetensors").write_bytes(seeded)
    with pytest.raises(GalleryError, match="gallery hash mismatch"):
        load_gallery(tmp_path / "seed_edited.safetensors")


def test_leave_one_out_leaves_the_image_s_own_bank_rows_out(inspector: Inspector) -> None:
    g = inspector.gallery
    first = torch.tensor([0])
    feats = Features(g.pooled[first], {s: t[first] for s, t in g.stages.items()})
    size = CFG.crop_px
    kept = inspector.raw_scores(feats, [(0, size, 0, size)], None)
    left = inspector.raw_scores(feats, [(0, size, 0, size)], first)
    assert np.all(left.stage_means > kept.stage_means)
    record = g.manifest.memory_bank
    assert record is not None
    for i, s in enumerate(CFG.stages):  # the same as a bank that never held image 0's rows
        counts = record.rows_per_image[f"stage{s}"]
        bank = MemoryBank.from_rows(g.banks[s][counts[0] :], counts[1:])
        want = bank_maps(feats.stages[s], bank).flatten(1).mean(1)
        assert float(want[0]) == pytest.approx(float(left.stage_means[0, i]), rel=1e-4)


def test_a_defect_in_the_ignored_half_passes_and_the_same_defect_in_the_inspected_half_fails(
    inspector: Inspector, data: Path
) -> None:
    good = read_image(list_images(data / "test" / "good")[0])
    mirrored = (SIZE_PX - 1 - BLOB_AT[0], BLOB_AT[1])
    base, ignored, inspected = inspector.score(
        [good, paste_defect(good, BLOB_AT), paste_defect(good, mirrored)]
    )
    assert base.verdict == "PASS"
    assert ignored.verdict == "PASS" and ignored.defect_count == 0 and ignored.defects == ()
    assert inspected.verdict == "FAIL" and inspected.defect_count >= 1
    biggest = inspected.defects[0]
    assert biggest.x0 >= SIZE_PX // 2 - 1 and biggest.x0 <= mirrored[0] <= biggest.x1
    for r in (base, ignored, inspected):  # nothing outside the region scores, outlines or counts
        assert float(np.abs(r.anomaly_map[:, : SIZE_PX // 2 - 1]).max()) == 0.0
        assert int(r.mask[:, : SIZE_PX // 2].max()) == 0
        assert r.region is not None and r.region.shape == (SIZE_PX, SIZE_PX)
    assert inspected.defect_area_px == int(np.count_nonzero(inspected.mask))


def test_a_region_of_at_least_min_defect_area_px_fails_a_part_whatever_its_score(
    inspector: Inspector, data: Path
) -> None:
    image = paste_defect(
        read_image(list_images(data / "test" / "good")[0]), (SIZE_PX - 1 - BLOB_AT[0], BLOB_AT[1])
    )
    found = inspector.score([image])[0]
    largest = found.defects[0].area_px
    cal = inspector.gallery.manifest.calibration
    assert cal is not None
    lenient = cal.model_copy(update={"image_threshold": found.score + 1.0})  # the score alone would pass it
    for min_area, verdict in ((0, "PASS"), (largest, "FAIL"), (largest + 1, "PASS")):
        assert lenient.verdict_of(found.score, largest, min_area) == verdict
    manifest = inspector.gallery.manifest.model_copy(update={"calibration": lenient})
    for min_area, verdict in ((0, "PASS"), (largest, "FAIL")):
        engine = copy.copy(inspector.engine)
        engine.config = CFG.model_copy(update={"min_defect_area_px": min_area})
        bound = Inspector(engine, dataclasses.replace(inspector.gallery, manifest=manifest))
        assert bound.score([image])[0].verdict == verdict


def test_adding_images_chooses_the_coreset_again_and_refuses_another_size_than_the_region(
    gallery: Path, data: Path, tmp_path: Path
) -> None:
    grown = tmp_path / "grown.safetensors"
    shutil.copyfile(gallery, grown)
    new = list_images(data / "test" / "good")[:2]
    result = add_to_gallery(grown, new, RUNTIME, CAL, backbones=BACKBONES)
    g = load_gallery(grown)
    record = g.manifest.memory_bank
    assert (
        result.recalibrated
        and record is not None
        and g.manifest.region == load_gallery(gallery).manifest.region
    )
    assert all(len(c) == N_TRAIN + 2 for c in record.rows_per_image.values())
    assert all(g.banks[s].shape[0] == sum(record.rows_per_image[f"stage{s}"]) for s in CFG.stages)
    big = tmp_path / "big"
    big.mkdir()
    cv2.imwrite(str(big / "wide.png"), cv2.resize(read_image(new[0]), (SIZE_PX + 40, SIZE_PX)))
    with pytest.raises(
        BuildError, match=r"wide\.png: 168x128 px, but the gallery's region mask right_half\.png"
    ):
        add_to_gallery(grown, list_images(big), RUNTIME, CAL, backbones=BACKBONES)


def test_a_region_mask_of_another_size_is_refused_before_features_are_extracted(
    data: Path, tmp_path: Path
) -> None:
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.full((10, 10), 255, np.uint8))
    with pytest.raises(RegionError, match=r"small\.png: 10x10 px, but the gallery's images are 128x128"):
        build_gallery(list_images(data / "train" / "good"), tmp_path / "g.safetensors", CFG, RUNTIME,
                      backbones=BACKBONES, region_mask=small)  # fmt: skip
    assert not (tmp_path / "g.safetensors").exists()

"""Evaluation on labelled MVTec-layout data: build, calibrate, score every test image, write the report."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from inspector.config.root import InspectorConfig
from inspector.core.errors import InspectorError
from inspector.model.build import build_and_calibrate, list_images
from inspector.model.engine import BackboneCache, Inspector, iter_batches
from inspector.model.preprocess import read_image, resize_and_crop
from inspector.quality.report import CategoryEval, write_report

GOOD = "good"
MASK_SUFFIX = "_mask.png"
MASK_ON = 127  # a resized 0/255 mask pixel above this counts as defective

Progress = Callable[[int], None]


class EvalError(InspectorError):
    """The data folder is not in MVTec layout (the message names the folder or file)."""


@dataclass(frozen=True)
class TestImage:
    """One labelled test image and its ground-truth mask file (None for good images)."""

    path: Path
    defect_type: str
    mask_path: Path | None


def find_categories(data: Path, names: list[str] | None, marker: str = "train/good") -> list[Path]:
    """Category folders under data (data itself when it is one category), filtered by names.

    A category is a folder holding ``marker`` (``train/good`` to build a gallery; ``test`` to evaluate one).
    """
    if (data / marker).is_dir():
        found = [data]
    else:
        found = sorted(p for p in data.iterdir() if (p / marker).is_dir()) if data.is_dir() else []
    if names:
        found = [p for p in found if p.name in names]
        missing = set(names) - {p.name for p in found}
        if missing:
            raise EvalError(f"{data}: no category named {', '.join(sorted(missing))}")
    if not found:
        raise EvalError(f"{data}: no <category>/{marker} folder (MVTec layout expected)")
    return found


def list_tests(category: Path) -> list[TestImage]:
    """Every test image with its defect type and mask path (a defect without a mask file is an error)."""
    tests: list[TestImage] = []
    for type_dir in sorted(p for p in (category / "test").iterdir() if p.is_dir()):
        for path in list_images(type_dir):
            if type_dir.name == GOOD:
                tests.append(TestImage(path, GOOD, None))
                continue
            mask = category / "ground_truth" / type_dir.name / f"{path.stem}{MASK_SUFFIX}"
            if not mask.is_file():
                raise EvalError(f"{path}: ground-truth mask {mask} not found")
            tests.append(TestImage(path, type_dir.name, mask))
    return tests


def load_mask(test: TestImage, image_shape: tuple[int, ...], inspector: Inspector) -> np.ndarray:
    """Ground truth in model-input space: resized and cropped exactly like its image."""
    if test.mask_path is None:
        return np.zeros((inspector.config.crop_px,) * 2, dtype=bool)
    raw = cv2.imread(str(test.mask_path), cv2.IMREAD_GRAYSCALE)
    if raw is None:
        raise EvalError(f"{test.mask_path}: not a readable mask")
    if raw.shape[:2] != image_shape[:2]:
        raw = cv2.resize(raw, (image_shape[1], image_shape[0]), interpolation=cv2.INTER_NEAREST)
    crop, _ = resize_and_crop(raw, inspector.engine.prep)
    return np.asarray(crop[:, :, 0] > MASK_ON)


def score_category(
    name: str, inspector: Inspector, tests: list[TestImage], progress: Progress | None
) -> CategoryEval:
    """Score every test image; returns everything the report needs."""
    cal = inspector.gallery.manifest.calibration
    scores, maps, masks, crops = [], [], [], []
    elapsed = 0.0
    for batch in iter_batches(tests, inspector.engine.runtime.batch_size):
        images = [read_image(t.path) for t in batch]
        start = time.perf_counter()
        results = inspector.score(images)
        elapsed += time.perf_counter() - start
        for t, im, r in zip(batch, images, results, strict=True):
            scores.append(r.score)
            maps.append(r.anomaly_map)
            crops.append(r.crop)
            masks.append(load_mask(t, im.shape, inspector))
        if progress:
            progress(len(batch))
    return CategoryEval(
        name=name,
        image_paths=[str(t.path) for t in tests],
        labels=np.array([int(t.defect_type != GOOD) for t in tests]),
        defect_types=[t.defect_type for t in tests],
        scores=np.array(scores, dtype=np.float64),
        threshold=inspector.threshold,
        maps=np.stack(maps).astype(np.float32),
        masks=np.stack(masks),
        images=np.stack(crops),
        ms_per_image=elapsed * 1e3 / max(1, len(tests)),
        pixel_threshold=cal.pixel_threshold if cal else None,
        calibration=cal,
        gallery_sha256=inspector.gallery.content_hash,
    )


def evaluate_category(
    category: Path, config: InspectorConfig, out_dir: Path, progress: Callable[[str, int], Progress] | None
) -> CategoryEval:
    """Build and calibrate a gallery from train/good, then score test/ against it."""
    train = list_images(category / "train" / GOOD)
    tests = list_tests(category)
    gallery = out_dir / "galleries" / f"{category.name}.gallery"
    gallery.parent.mkdir(parents=True, exist_ok=True)
    backbones = BackboneCache()

    def step(name: str, total: int) -> Progress | None:
        return progress(f"{category.name} {name}", total) if progress else None

    build_and_calibrate(
        train, gallery, config.model, config.runtime, config.calibration, progress=step, backbones=backbones
    )
    inspector = Inspector.from_gallery(gallery, config.runtime, backbones=backbones)
    return score_category(
        category.name, inspector, tests, progress(f"{category.name} test", len(tests)) if progress else None
    )


def save_maps(out_dir: Path, ev: CategoryEval) -> Path:
    """Write ``maps_<category>.npz``: anomaly maps, ground-truth masks, scores, labels, thresholds, paths.

    Every array is plain (no object arrays), so ``np.load(path, allow_pickle=False)`` reads it.
    """
    path = out_dir / f"maps_{ev.name}.npz"
    np.savez_compressed(
        path,
        maps=np.asarray(ev.maps, dtype=np.float32),
        masks=np.asarray(ev.masks, dtype=bool),
        scores=np.asarray(ev.scores, dtype=np.float64),
        labels=np.asarray(ev.labels, dtype=np.int64),
        image_paths=np.array(ev.image_paths, dtype=str),
        defect_types=np.array(ev.defect_types, dtype=str),
        image_threshold=np.float64(ev.threshold),
        pixel_threshold=np.float64(np.nan if ev.pixel_threshold is None else ev.pixel_threshold),
    )
    return path


def evaluate_gallery(
    gallery: Path, data: Path, categories: list[str] | None, config: InspectorConfig,
    progress: Callable[[str, int], Progress] | None,
) -> CategoryEval:  # fmt: skip
    """Score one labelled category's test/ against an existing gallery, as the daemon would run it.

    Raises:
        EvalError: ``data`` holds no or several categories (name one with ``categories``).
    """
    found = find_categories(data, categories, marker="test")
    if len(found) != 1:
        names = ", ".join(p.name for p in found)
        raise EvalError(f"{data}: --gallery evaluates one category, found {len(found)} ({names}): name one")
    tests = list_tests(found[0])
    inspector = Inspector.from_gallery(gallery, config.runtime)
    return score_category(
        found[0].name, inspector, tests, progress(f"{found[0].name} test", len(tests)) if progress else None
    )


def run_eval(
    data: Path,
    categories: list[str] | None,
    out_dir: Path,
    config: InspectorConfig,
    progress: Callable[[str, int], Progress] | None = None,
    with_maps: bool = False,
    gallery: Path | None = None,
) -> tuple[list[CategoryEval], dict[str, dict[str, float]]]:
    """The ``inspector eval`` command body: every category (or, with ``gallery``, that gallery on one
    category), then metrics.json, report.md and PNGs (and, with ``with_maps``, maps and masks as .npz).

    Returns:
        Each category's evaluation (:func:`inspector.quality.report.category_verdict` says what it showed),
        and the metrics written to metrics.json.
    """
    if gallery is not None:
        evals = [evaluate_gallery(gallery, data, categories, config, progress)]
        settings: dict[str, object] = {"gallery": str(gallery), "gallery_sha256": evals[0].gallery_sha256}
    else:
        evals = [evaluate_category(c, config, out_dir, progress) for c in find_categories(data, categories)]
        settings = {
            **config.model.model_dump(mode="json"),
            "precision": config.runtime.precision,
            **config.calibration.model_dump(mode="json"),
        }
    if with_maps:
        out_dir.mkdir(parents=True, exist_ok=True)
        for ev in evals:
            save_maps(out_dir, ev)
    return evals, write_report(out_dir, evals, settings)

"""Calibration study: every calibration method's realised false-reject and escape rates, the CNN run once.

Usage: python tools/calibration_study.py --data ../shared/data/mvtec_bottle --cache study/ [--out table.md]
       [--resize 256 --crop 224 --backbone efficientnet_lite0] [--splits leave_one_out,leave_m_out:5,k_fold:5]

Per category: features of train/good and of test/ are extracted once; the gallery images are scored once per
way of leaving images out (with the product's own ``score_normals``), the test images once; every tail estimate
and image-score mode then reads its threshold from those scores (``thresholds_from_scores``). Scores are cached
as .npz under --cache (np.load with allow_pickle=False), so a rerun only analyses.
"""

from __future__ import annotations

import inspector as _package  # noqa: F401 - first: sets OMP_WAIT_POLICY before torch loads

# isort: split

import argparse
import functools
import sys
import time
from pathlib import Path

import numpy as np

from inspector.config.calibration import CalibrationConfig
from inspector.config.model import ModelConfig
from inspector.config.runtime import RuntimeConfig
from inspector.model.build import list_images
from inspector.model.engine import BackboneCache, FeatureEngine, Features, Inspector, RawScores
from inspector.model.preprocess import read_image
from inspector.model.thresholds import score_normals
from inspector.quality.evaluate import GOOD, list_tests, load_mask
from inspector.quality.features import extract_features, in_memory_inspector
from inspector.quality.metrics import image_auroc, pixel_auroc, pro_score
from inspector.quality.study import Scores, Split, method_rows, parse_splits, table_lines

RUNTIME = RuntimeConfig()
BACKBONES = BackboneCache()
DEFAULT_SPLITS = "leave_one_out,leave_m_out:5,k_fold:5"


def _save(path: Path, raw: RawScores, scales: list[float] | None, seconds: float) -> None:
    np.savez(path, knn=raw.knn, map_max=raw.map_max, map_top_mean=raw.map_top_mean,
             scales=np.array(scales or [], dtype=np.float64), seconds=np.array(seconds))  # fmt: skip


def _load(path: Path) -> tuple[Scores, list[float] | None, float]:
    with np.load(path, allow_pickle=False) as z:
        scales = [float(v) for v in z["scales"]] or None
        return Scores(z["knn"], z["map_max"], z["map_top_mean"]), scales, float(z["seconds"])


def normal_scores_cached(insp: Inspector, split: Split, cache: Path) -> tuple[Scores, list[float] | None]:
    """The gallery's normal scores for one way of leaving images out (computed once, then read)."""
    path = _split_path(cache, split)
    if not path.exists():
        start = time.perf_counter()
        cfg = CalibrationConfig(leave_out=split.leave_out, neighbours_left_out=split.m, folds=split.folds)
        normal = score_normals(insp, cfg)
        _save(path, normal.raw, normal.scales, time.perf_counter() - start)
    scores, scales, seconds = _load(path)
    print(f"  normal scores {split.label}: {scores.knn.size} images, {seconds:.0f} s", flush=True)
    return scores, scales


def test_scores_cached(
    insp: Inspector, test: Features, valid: list[tuple[int, int, int, int]], scales: list[float] | None,
    masks: np.ndarray, labels: np.ndarray, cache: Path,
) -> tuple[Scores, list[float] | None, dict[str, float]]:  # fmt: skip
    """Test scores (with the given stage scales) and the threshold-free metrics, computed once."""
    path = cache / "test.npz"
    metrics_path = cache / "test_metrics.npz"
    if not path.exists():
        start = time.perf_counter()
        parts: list[RawScores] = []
        for i in range(0, len(valid), insp.engine.runtime.batch_size):
            sel = slice(i, i + insp.engine.runtime.batch_size)
            f = Features(test.pooled[sel], {s: t[sel] for s, t in test.stages.items()})
            parts.append(insp.raw_scores(f, valid[sel], None, scales))
        maps = np.concatenate([p.maps for p in parts])
        cat = {k: np.concatenate([getattr(p, k) for p in parts]) for k in ("knn", "map_max", "map_top_mean")}
        raw = RawScores(cat["knn"], cat["map_max"], cat["map_top_mean"], maps, np.zeros((len(valid), 0)))
        _save(path, raw, scales, time.perf_counter() - start)
        np.savez(metrics_path, pixel=pixel_auroc(masks, maps), pro=pro_score(masks, maps))
    scores, used, seconds = _load(path)
    with np.load(metrics_path, allow_pickle=False) as z:
        metrics = {"pixel_auroc": float(z["pixel"]), "pro": float(z["pro"])}
    metrics |= {
        f"image_auroc_{k}": image_auroc(labels, getattr(scores, k))
        for k in ("knn", "map_max", "map_top_mean")
    }
    print(f"  test scores: {labels.size} images, {seconds:.0f} s; {metrics}", flush=True)
    return scores, used, metrics


def _split_path(cache: Path, split: Split) -> Path:
    return cache / f"normal_{split.label.replace(':', '_')}.npz"


def analyse_cached(category: Path, splits: list[Split], cache: Path, rate: float) -> list[str]:
    """The table from cached scores only (no network run): the splits whose scores are cached."""
    tests = list_tests(category)
    labels = np.array([int(t.defect_type != GOOD) for t in tests])
    normals = {}
    for split in splits:
        if _split_path(cache, split).exists():
            scores, scales, seconds = _load(_split_path(cache, split))
            print(f"  normal scores {split.label}: {scores.knn.size} images, {seconds:.0f} s", flush=True)
            normals[split.label] = (scores, scales)
    test, test_scales, seconds = _load(cache / "test.npz")
    with np.load(cache / "test_metrics.npz", allow_pickle=False) as z:
        metrics = {"pixel_auroc": float(z["pixel"]), "pro": float(z["pro"])}
    metrics |= {
        f"image_auroc_{k}": image_auroc(labels, getattr(test, k)) for k in ("knn", "map_max", "map_top_mean")
    }
    print(f"  test scores: {labels.size} images, {seconds:.0f} s", flush=True)
    rows = method_rows(normals, test, test_scales, labels, [t.defect_type for t in tests], rate)
    return table_lines(rows, metrics, category.name)


def study_category(
    category: Path, cfg: ModelConfig, splits: list[Split], cache: Path, rate: float
) -> list[str]:
    """Score one category once per split and return its markdown rows."""
    cache.mkdir(parents=True, exist_ok=True)
    engine = FeatureEngine(cfg, RUNTIME, BACKBONES)
    train_paths = list_images(category / "train" / GOOD)
    tests = list_tests(category)
    start = time.perf_counter()
    train, _ = extract_features(engine, train_paths)
    test, valid = extract_features(engine, [t.path for t in tests])
    print(f"{category.name}: features of {len(train_paths)} + {len(tests)} images, "
          f"{time.perf_counter() - start:.0f} s", flush=True)  # fmt: skip
    insp = in_memory_inspector(engine, train, cfg)
    labels = np.array([int(t.defect_type != GOOD) for t in tests])
    defect_types = [t.defect_type for t in tests]
    normals = {splits[0].label: normal_scores_cached(insp, splits[0], cache)}
    masks = np.stack([load_mask(t, read_image(t.path).shape, insp) for t in tests])
    ref_scales = normals[splits[0].label][1]  # the test set next: a run cut short still has a table
    test_scores, test_scales, metrics = test_scores_cached(
        insp, test, valid, ref_scales, masks, labels, cache
    )
    normals |= {s.label: normal_scores_cached(insp, s, cache) for s in splits[1:]}
    rows = method_rows(normals, test_scores, test_scales, labels, defect_types, rate)
    return table_lines(rows, metrics, category.name)


def main(argv: list[str] | None = None) -> int:
    """Run the study on every category given and print (and optionally write) the tables."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--data", type=Path, action="append", required=True, help="a category folder (repeatable)"
    )
    ap.add_argument("--cache", type=Path, required=True, help="folder for the cached scores")
    ap.add_argument("--splits", default=DEFAULT_SPLITS)
    ap.add_argument("--rate", type=float, default=0.01, help="target false-reject rate")
    ap.add_argument("--resize", type=int, default=256)
    ap.add_argument("--crop", type=int, default=224)
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--cached-only", action="store_true", help="only tabulate the scores already cached")
    args = ap.parse_args(argv)
    cfg = ModelConfig.model_validate(
        {"backbone": args.backbone, "resize_px": args.resize, "crop_px": args.crop}
    )
    variant = f"{args.backbone}_{args.resize}_{args.crop}"
    lines: list[str] = []
    for category in args.data:
        run = analyse_cached if args.cached_only else functools.partial(study_category, cfg=cfg)
        lines += run(category, splits=parse_splits(args.splits), cache=args.cache / variant / category.name,
                     rate=args.rate)  # fmt: skip
        print("\n".join(lines), flush=True)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

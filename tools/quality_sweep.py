"""Quality sweep: SPADE settings vs detection metrics on MVTec-layout data, features extracted once per variant.

Usage: python tools/quality_sweep.py --data ../shared/data/mvtec_bottle [--out docs/sweep_bottle.md]
    [--backbone efficientnet_lite2 --resize 320 --crop 288]

Image and pixel AUROC and PRO are threshold-free, so no calibration is run here; the chosen defaults are
then checked end to end (calibration included) with ``inspector eval``.
"""

from __future__ import annotations

import inspector as _package  # noqa: F401 - first: sets OMP_WAIT_POLICY before torch loads

# isort: split

import argparse
import itertools
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from inspector.config.model import ModelConfig
from inspector.config.runtime import RuntimeConfig
from inspector.model.build import list_images
from inspector.model.coreset import memory_bank
from inspector.model.engine import BackboneCache, FeatureEngine, Features
from inspector.model.manifest import MemoryBank
from inspector.model.preprocess import read_image
from inspector.quality.evaluate import GOOD, TestImage, list_tests, load_mask
from inspector.quality.features import extract_features, in_memory_inspector
from inspector.quality.metrics import image_auroc, pixel_auroc, pro_score

RUNTIME = RuntimeConfig()
BACKBONES = BackboneCache()  # one network per backbone for the whole sweep
LOO_SAMPLE = 24  # gallery images scored leave-one-out for the knn_plus_map normalisers


@dataclass
class Extracted:
    """Features of train and test images for one preprocessing/backbone variant."""

    train: Features
    test: Features
    valid: list[tuple[int, int, int, int]]
    masks: np.ndarray
    labels: np.ndarray


def prepare(category: Path, cfg: ModelConfig) -> tuple[FeatureEngine, Extracted]:
    engine = FeatureEngine(cfg, RUNTIME, BACKBONES)
    train = list_images(category / "train" / GOOD)
    tests: list[TestImage] = list_tests(category)
    tr, _ = extract_features(engine, train)
    te, valid = extract_features(engine, [t.path for t in tests])
    dummy = in_memory_inspector(engine, tr, cfg)
    masks = np.stack([load_mask(t, read_image(t.path).shape, dummy) for t in tests])
    labels = np.array([int(t.defect_type != GOOD) for t in tests])
    return engine, Extracted(tr, te, valid, masks, labels)


def content_mask(valid: list[tuple[int, int, int, int]], shape: tuple[int, ...]) -> np.ndarray:
    """[N, H, W] True where the crop holds real image content (not letterbox padding)."""
    out = np.zeros((len(valid), *shape), dtype=bool)
    for i, (y0, y1, x0, x1) in enumerate(valid):
        out[i, y0:y1, x0:x1] = True
    return out


BANKS: dict[tuple[tuple[int, ...], float], tuple[dict[int, torch.Tensor], MemoryBank, float]] = {}


def evaluate(engine: FeatureEngine, ex: Extracted, cfg: ModelConfig) -> dict[str, float]:
    coreset_s = 0.0
    bank = None
    if cfg.pixel_search == "memory_bank":  # one coreset per stage set and fraction, whatever the fusion
        key = (cfg.stages, cfg.coreset_fraction)
        if key not in BANKS:
            start = time.perf_counter()
            banks, record = memory_bank({s: ex.train.stages[s] for s in cfg.stages}, cfg.coreset_fraction)
            BANKS[key] = (banks, record, time.perf_counter() - start)
        bank = BANKS[key][:2]
        coreset_s = BANKS[key][2]
    insp = in_memory_inspector(engine, ex.train, cfg, bank)
    idx = torch.arange(min(LOO_SAMPLE, ex.train.pooled.shape[0]))
    size = cfg.crop_px
    loo_feats = Features(ex.train.pooled[idx], {s: ex.train.stages[s][idx] for s in cfg.stages})
    ones = [1.0] * len(cfg.stages)
    loo = insp.raw_scores(loo_feats, [(0, size, 0, size)] * len(idx), idx, ones)
    scales = [float(v) for v in loo.stage_means.mean(0)]
    if cfg.stage_fusion != "mean":
        loo = insp.raw_scores(loo_feats, [(0, size, 0, size)] * len(idx), idx, scales)
    start = time.perf_counter()
    feats = Features(ex.test.pooled, {s: ex.test.stages[s] for s in cfg.stages})
    raw = insp.raw_scores(feats, ex.valid, None, scales)
    ms = (time.perf_counter() - start) * 1e3 / len(ex.labels)
    combo = raw.knn / np.median(loo.knn) + raw.map_max / np.median(loo.map_max)
    content = content_mask(ex.valid, raw.maps.shape[1:])
    return {
        "img_knn": image_auroc(ex.labels, raw.knn),
        "img_max": image_auroc(ex.labels, raw.map_max),
        "img_top": image_auroc(ex.labels, raw.map_top_mean),
        "img_combo": image_auroc(ex.labels, combo),
        "pixel": pixel_auroc(ex.masks, raw.maps),
        # letterbox padding is never scored: leave it out, or it counts as easy true negatives
        "pixel_content": pixel_auroc(ex.masks[content][None, None], raw.maps[content][None, None]),
        "pro": pro_score(ex.masks, raw.maps),
        "match_ms": ms,
        "coreset_s": coreset_s,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--variants", default="squash,aspect", help="preprocessing variants")
    ap.add_argument("--neigh", default="1,3")
    ap.add_argument("--stages", default="012,12,01")
    ap.add_argument("--ks", default="10,50", help="pixel K values")
    ap.add_argument("--sigmas", default="4")
    ap.add_argument("--image-k", type=int, default=50)
    ap.add_argument("--fusions", default="mean", help="stage fusions: mean,scaled_mean,scaled_geomean")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--resize", type=int, default=256, help="resize_px")
    ap.add_argument("--crop", type=int, default=224, help="crop_px")
    ap.add_argument("--pixel-search", default="full", help="pixel searches: full,window,memory_bank")
    ap.add_argument("--window-cells", type=int, default=2)
    ap.add_argument("--coreset-fractions", default="0.01", help="pixel search memory_bank: coreset fractions")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    header = (
        "| preprocessing | search | neighbourhood | stages | fusion | K | sigma | image AUROC knn | max | top1% | knn+max "
        "| pixel AUROC | pixel AUROC on content | PRO | match ms/img | coreset | coreset s |"
    )
    rows = [
        f"{args.data.name}: {args.backbone}, resize {args.resize}, crop {args.crop}",
        header,
        "|" + "---|" * 17,
    ]
    print(rows[0], flush=True)
    print(rows[1], flush=True)
    for variant, neigh in itertools.product(args.variants.split(","), args.neigh.split(",")):
        base = ModelConfig(
            backbone=args.backbone,
            resize_px=args.resize,
            crop_px=args.crop,
            keep_aspect=variant == "aspect",
            neighbourhood_px=int(neigh),
            image_k=args.image_k,
            window_cells=args.window_cells,
        )
        engine, ex = prepare(args.data, base)
        searches = [
            (search, fraction)
            for search in args.pixel_search.split(",")
            for fraction in (args.coreset_fractions.split(",") if search == "memory_bank" else ["-"])
        ]
        grid = itertools.product(
            searches,
            args.stages.split(","),
            args.fusions.split(","),
            args.ks.split(","),
            args.sigmas.split(","),
        )
        for (search, fraction), st, fusion, k, sig in grid:
            update = {
                "pixel_search": search,
                "stages": tuple(int(c) for c in st),
                "pixel_k": int(k),
                "blur_sigma_px": float(sig),
                "stage_fusion": fusion,
                **({"coreset_fraction": float(fraction)} if fraction != "-" else {}),
            }
            cfg = base.model_copy(update=update)
            m = evaluate(engine, ex, cfg)
            row = (
                f"| {variant} | {search} | {neigh} | {','.join(st)} | {fusion} | {k} | {sig} | {m['img_knn']:.4f} | {m['img_max']:.4f} "
                f"| {m['img_top']:.4f} | {m['img_combo']:.4f} | {m['pixel']:.4f} | {m['pixel_content']:.4f} | {m['pro']:.4f} "
                f"| {m['match_ms']:.0f} | {fraction} | {m['coreset_s']:.0f} |"
            )
            rows.append(row)
            print(row, flush=True)
    if args.out:
        args.out.write_text("\n".join(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Features of labelled image folders extracted once, and an in-memory Inspector over them, for studies."""

from __future__ import annotations

from pathlib import Path

import torch

from inspector.config.model import ModelConfig
from inspector.model.engine import FeatureEngine, Features, Inspector
from inspector.model.gallery import Gallery
from inspector.model.manifest import GalleryManifest, SourceImage
from inspector.model.preprocess import read_image
from inspector.model.settings import manifest_preprocessing, spade_params
from inspector.model.thresholds import utc_now

Box = tuple[int, int, int, int]  # (y0, y1, x0, x1) of an image's content in the crop


def extract_features(engine: FeatureEngine, paths: list[Path]) -> tuple[Features, list[Box]]:
    """Features of every image, on the CPU, in batches of the runtime's batch size.

    Args:
        engine: the feature extractor (its config says the stages).
        paths: image files, read in this order.

    Returns:
        The features, and each image's content box in the crop (letterbox padding excluded).
    """
    pooled: list[torch.Tensor] = []
    stages: dict[int, list[torch.Tensor]] = {s: [] for s in engine.config.stages}
    valid: list[Box] = []
    batch = engine.runtime.batch_size
    for i in range(0, len(paths), batch):
        feats, prep = engine.extract([read_image(p) for p in paths[i : i + batch]], {})
        pooled.append(feats.pooled.cpu())
        for s, t in feats.stages.items():
            stages[s].append(t.cpu())
        valid += prep.valid
    return Features(torch.cat(pooled), {s: torch.cat(v) for s, v in stages.items()}), valid


def in_memory_inspector(engine: FeatureEngine, train: Features, config: ModelConfig) -> Inspector:
    """An uncalibrated Inspector over features already extracted (no gallery file), scoring with ``config``.

    Args:
        engine: the engine that extracted ``train``; its config is replaced by ``config``.
        train: the gallery's features (every stage of ``config.stages``).
        config: the model settings to score with.
    """
    n = train.pooled.shape[0]
    manifest = GalleryManifest(
        backbone=engine.spec.name,
        weights_sha256=engine.spec.weights_sha256,
        preprocessing=manifest_preprocessing(config, engine.spec),
        stages=list(config.stages),
        spade=spade_params(config),
        image_count=n,
        sources=[SourceImage(name=f"{i}.png", sha256="0" * 64) for i in range(n)],
        created_at=utc_now(),
    )
    gallery = Gallery(manifest, train.pooled, {s: train.stages[s] for s in config.stages})
    engine.config = config
    return Inspector(engine, gallery, require_calibration=False)

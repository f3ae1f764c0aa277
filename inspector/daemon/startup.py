"""Start-up's model step: every product's gallery loaded, validated and logged, the model warmed up."""

from __future__ import annotations

import threading
import time

import structlog

from inspector.config.root import InspectorConfig
from inspector.daemon.products import Loader, ProductRegistry, load_products, product_loader
from inspector.daemon.worker import ModelWorker
from inspector.model.engine import BackboneCache

MIB = 1 << 20


def load_and_warm_up(
    config: InspectorConfig, stop: threading.Event, log: structlog.stdlib.BoundLogger
) -> tuple[Loader, ProductRegistry]:
    """Load every product's gallery (each validated and logged), then warm the model up unless stopping.

    Returns:
        The gallery loader (reloads use it again) and the products.

    Raises:
        Exception: whatever refuses a gallery (named file and reason), before the daemon is ready.
    """
    if config.worker.torch_threads:
        import torch

        torch.set_num_threads(config.worker.torch_threads)
    started = time.monotonic()
    loader = product_loader(config, BackboneCache())
    products = load_products(config, loader)
    for name in products.products:
        info = products.info(name)
        log.info(
            "gallery_validated", product=name, gallery=info.gallery_hash, images=info.image_count,
            backbone=info.backbone, feature_mib=round(info.feature_bytes / MIB, 1), signed_by=info.signed_by,
        )  # fmt: skip
        runtime = dict(
            getattr(products.scorer(name), "runtime_summary", {})
        )  # backbone runtime, pixel kernel
        if runtime:
            (log.warning if runtime.get("fallback") else log.info)("model_runtime", product=name, **runtime)
    warn_unused_keys(config, log)
    if config.worker.warmup and not stop.is_set():
        ModelWorker(products).warm_up(config.batching.max_batch)
    log.info("model_ready", seconds=round(time.monotonic() - started, 3), warmup=config.worker.warmup)
    return loader, products


def warn_unused_keys(config: InspectorConfig, log: structlog.stdlib.BoundLogger) -> None:
    """Name the keys the galleries decide (they agree, or start-up stopped) and the daemon does not use."""
    decided = [f"model.{k}" for k in sorted(config.model.model_fields_set)]
    decided += [f"calibration.{k}" for k in sorted(config.calibration.model_fields_set)]
    if decided:
        log.warning("config_keys_decided_by_gallery", keys=decided, note="they agree with every gallery")
    if "batch_size" in config.runtime.model_fields_set:
        log.warning(
            "config_key_unused", key="runtime.batch_size", note="the daemon batches by batching.max_batch"
        )

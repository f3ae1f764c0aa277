"""GPU benchmark: frames/s and p99 per-frame latency of the real engine at batch 1, 8, 32, next to the GEMM rate.

Prepared for CUDA (tools/gpu_bench.sh runs it); ``--device cpu --quick`` is the smoke test on any machine.
For each backbone and K it times ``Inspector.score`` on uint8 frames (preprocessing, pinned host copy,
backbone, image kNN, pixel matching, maps and masks), reports the pixel matching's ratio to its FLOP
floor at the float32 GEMM rate measured in the same run, and the error of each candidate-search precision
(tf32, bfloat16) against float32 on the same frames.

    .venv/bin/python tools/bench_gpu.py                   # CUDA: Lite0 K=10 and wide_resnet50_2 K=50
    .venv/bin/python tools/bench_gpu.py --device cpu --quick
"""

from __future__ import annotations

import inspector as _package  # noqa: F401 - first: sets OMP_WAIT_POLICY before torch loads

# isort: split

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from bench_spade import gemm_gflops, make_images, pixel_gflop, synthetic_gallery

from inspector.config.model import ModelConfig
from inspector.config.runtime import Precision, RuntimeConfig
from inspector.model.engine import BackboneCache, FeatureEngine, Inspector, resolve_device
from inspector.model.gallery import Gallery
from inspector.model.manifest import Calibration

MS_PER_S = 1e3
GFLOP = 1e9
PERCENTILE = 99.0
PRECISIONS: tuple[Precision, ...] = ("tf32", "bfloat16")
UNIT_CALIBRATION = Calibration.model_validate(
    {
        "image_threshold": 1.0,
        "pixel_threshold": 1.0,
        "score_median": 1.0,
        "map_max_median": 1.0,
        "target_false_reject_rate": 0.01,
        "pixel_target_rate": 0.01,
        "method": "holdout",
        "n_images": 1,
        "stage_scales": [1.0, 1.0, 1.0],
        "image_score_median": 1.0,
        "normal_scores": [1.0],
        "normal_knn": [1.0],
        "normal_map_max": [1.0],
        "created_at": "2026-01-01T00:00:00Z",
    }
)


@dataclass(frozen=True)
class Case:
    """One backbone at one K."""

    backbone: str
    k: int


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--cases", default="efficientnet_lite0:10,wide_resnet50_2:50", help="backbone:K,...")
    p.add_argument("--batches", default="1,8,32")
    p.add_argument("--gallery-size", dest="gallery_size", type=int, default=200)
    p.add_argument("--crop-px", dest="crop_px", type=int, default=224)
    p.add_argument("--budget-s", dest="budget_s", type=float, default=8.0, help="timing per batch size")
    p.add_argument("--gemm-px", dest="gemm_px", type=int, default=8192)
    p.add_argument(
        "--quick", action="store_true", help="crop 64, batches 1,2, K 3, tiny gallery (smoke test)"
    )
    ns = p.parse_args(argv)
    if ns.quick:
        ns.cases, ns.batches, ns.gallery_size = "efficientnet_lite0:3", "1,2", 6
        ns.crop_px, ns.budget_s, ns.gemm_px = 64, 0.5, 256
    return ns


def build(case: Case, ns: argparse.Namespace, device: torch.device, precision: Precision) -> Inspector:
    """An Inspector on a synthetic in-memory gallery of the backbone's real shapes."""
    cfg = ModelConfig.model_validate(
        {"backbone": case.backbone, "resize_px": ns.crop_px, "crop_px": ns.crop_px, "pixel_k": case.k}
    )
    runtime = RuntimeConfig(device=device.type, precision=precision)
    engine = FeatureEngine(cfg, runtime, BackboneCache(random_weights=case.backbone != "efficientnet_lite0"))
    feats, _ = engine.extract(make_images(1, ns.crop_px), {})
    gallery = synthetic_gallery(engine, feats, ns.gallery_size)
    manifest = gallery.manifest.model_copy(update={"calibration": UNIT_CALIBRATION})
    return Inspector(engine, Gallery(manifest, gallery.pooled, gallery.stages))


def time_batches(inspector: Inspector, frames: list[np.ndarray], budget_s: float) -> list[float]:
    """Seconds per ``Inspector.score`` call on the same batch, after two warm-up calls, for ``budget_s``."""
    for _ in range(2):
        inspector.score(frames)
    samples: list[float] = []
    started = time.perf_counter()
    while not samples or time.perf_counter() - started < budget_s:
        t0 = time.perf_counter()
        inspector.score(frames)
        if inspector.engine.device.type == "cuda":
            torch.cuda.synchronize()
        samples.append(time.perf_counter() - t0)
    return samples


def precision_error(
    case: Case, ns: argparse.Namespace, device: torch.device, frames: list[np.ndarray]
) -> str:
    """Largest relative map error of each reduced candidate-search precision against float32."""
    if device.type != "cuda":
        return "tf32/bfloat16: CUDA only (float32 here)"
    ref = np.stack([r.anomaly_map for r in build(case, ns, device, "float32").score(frames)])
    parts = []
    for precision in PRECISIONS:
        got = np.stack([r.anomaly_map for r in build(case, ns, device, precision).score(frames)])
        err = float(np.max(np.abs(got - ref) / np.maximum(np.abs(ref), 1e-12)))
        parts.append(f"{precision} max rel map error {err:.2e}")
    return "; ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    """Run every case and batch; print one row each, then the precision errors."""
    ns = parse_args(argv)
    device = resolve_device(ns.device)
    batches = [int(b) for b in ns.batches.split(",")]
    frames = make_images(max(batches), ns.crop_px)
    rate = gemm_gflops(device, ns.gemm_px, 3)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"torch {torch.__version__}, {device} ({name}); GEMM float32 {ns.gemm_px}^3: {rate:.0f} GFLOP/s")
    print(
        f"{'backbone':<18} {'K':>3} {'B':>3} {'frames/s':>9} {'p99 ms':>8} {'pix ms/img':>10} {'pix ratio':>9}"
    )
    notes = []
    for spec in ns.cases.split(","):
        backbone, k = spec.split(":")
        case = Case(backbone, int(k))
        inspector = build(case, ns, device, "float32")
        shapes = {s: (t.shape[1], t.shape[2], t.shape[3]) for s, t in inspector.gallery.stages.items()}
        floor_ms = pixel_gflop(shapes, min(case.k, ns.gallery_size)) / rate * MS_PER_S
        for batch in batches:
            samples = time_batches(inspector, frames[:batch], ns.budget_s)
            fps = batch / float(np.median(samples))
            p99 = float(np.percentile(samples, PERCENTILE)) * MS_PER_S
            pix = inspector.score(frames[:batch])[0].timings_ms["pixel_match"] / batch
            print(
                f"{backbone:<18} {case.k:>3} {batch:>3} {fps:>9.1f} {p99:>8.2f} {pix:>10.3f} {pix / floor_ms:>9.2f}"
            )
        notes.append(f"{backbone} K={case.k}: {precision_error(case, ns, device, frames[: batches[0]])}")
    print("p99 = 99th percentile of the batch's wall time (every frame of a batch waits for all of it)")
    print("\n".join(notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark of the SPADE engine: ms per image per stage against the arithmetic floor measured in the same run."""

from __future__ import annotations

import inspector as _package  # noqa: F401 - first: sets OMP_WAIT_POLICY before torch loads

# isort: split

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from bench_daemon import cpu_model
from torch.utils.flop_counter import FlopCounterMode

from inspector.config.model import ModelConfig
from inspector.config.runtime import RuntimeConfig
from inspector.core.names import COMPUTE_STAGES as STAGE_NAMES
from inspector.demo.parts import render_part
from inspector.model.engine import BackboneCache, FeatureEngine, Features, Inspector, resolve_device
from inspector.model.gallery import Gallery
from inspector.model.manifest import GalleryManifest, SourceImage
from inspector.model.settings import manifest_preprocessing, spade_params
from inspector.model.spade import stage_maps as reference_stage_maps
from inspector.model.thresholds import utc_now

REAL_WEIGHTS_BACKBONE = "efficientnet_lite0"  # the only backbone whose weights ship with the package
GFLOP = 1e9
MS_PER_S = 1e3
UNIT_SCALES = [1.0, 1.0, 1.0]  # stage scales for the uncalibrated in-memory gallery (timing only)
FLOPS_PER_MAC = 2
FLOOR_STAGES = ("backbone", "image_knn", "pixel_match")  # stages with an arithmetic (FLOP) floor
SEED = 0
FAKE_SHA256 = "0" * 64
DEFAULTS = ModelConfig.model_validate({})
RUNTIME_DEFAULTS = RuntimeConfig()
STAGE_HEADS = {
    "preprocess": "prep",
    "backbone": "backbone",
    "image_knn": "img_knn",
    "pixel_match": "pix_match",
    "upsample_blur": "up+blur",
}


@dataclass(frozen=True)
class Settings:
    """Resolved command-line settings."""

    device: torch.device
    backbones: tuple[str, ...]
    batches: tuple[int, ...]
    ks: tuple[int, ...]
    repeats: int
    budget_s: float
    gallery_size: int
    image_px: int
    resize_px: int
    crop_px: int
    gemm_px: int
    gemm_repeats: int
    pixel_search: str = "full"
    window_cells: int = DEFAULTS.window_cells
    float16: bool = False
    reference: bool = False
    kernels: tuple[str, ...] = ("torch", "fused")
    runtimes: tuple[str, ...] = ("torch", "openvino")


@dataclass
class Row:
    """One backbone/batch/K measurement: medians in ms per image and the arithmetic floor."""

    backbone: str
    weights: str
    batch: int
    k: int
    reps: int
    stage_ms: dict[str, float]
    gflop: dict[str, float] = field(default_factory=dict)
    runtime: str = "torch"  # what ran the backbone
    kernel: str = "torch"  # what ran the full pixel search

    @property
    def total_ms(self) -> float:
        """Sum of the per-stage medians (ms per image)."""
        return sum(self.stage_ms.values())


def gemm_gflops(device: torch.device, size: int, repeats: int) -> float:
    """Best-of-``repeats`` float32 GEMM rate of a size x size x size matmul, in GFLOP/s."""
    gen = torch.Generator().manual_seed(SEED)
    a = torch.randn(size, size, generator=gen).to(device)
    b = torch.randn(size, size, generator=gen).to(device)
    best = float("inf")
    for _ in range(repeats + 1):  # the first is warm-up
        start = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return FLOPS_PER_MAC * size**3 / best / GFLOP


def backbone_gflop(engine: FeatureEngine, crop_px: int) -> float:
    """FLOPs of one image through the extractor (convolutions and matmuls, as torch counts them), in GFLOP."""
    x = torch.zeros(1, 3, crop_px, crop_px, device=engine.device)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        engine.torch_extractor(x)
    return counter.get_total_flops() / GFLOP


def knn_gflop(n: int, d: int, k_used: int) -> float:
    """Image kNN FLOPs per image: 2*N*D for the distance GEMM plus the norm and exact-distance terms."""
    return (FLOPS_PER_MAC * n * d + 2 * d + 2 * n * d + 3 * k_used * d) / GFLOP


def pixel_gflop(shapes: dict[int, tuple[int, int, int]], k: int) -> float:
    """Pixel-matching FLOPs per image: per stage 2*(H*W)*(K*H*W)*C plus the bank norm and centring terms."""
    total = 0
    for c, h, w in shapes.values():
        locs, bank = h * w, k * h * w
        total += FLOPS_PER_MAC * locs * bank * c + 4 * bank * c + 4 * locs * c
    return total / GFLOP


def make_images(count: int, size_px: int) -> list[np.ndarray]:
    """Synthetic good parts (BGR uint8) from the demo renderer."""
    rng = np.random.default_rng(SEED)
    return [render_part(rng, size_px)[0] for _ in range(count)]


def synthetic_gallery(engine: FeatureEngine, feats: Features, n: int, float16: bool = False) -> Gallery:
    """An in-memory gallery of n images with random features of the backbone's real shapes.

    ``float16`` marks it as stored in float16 (the engine then keeps its banks in float16).
    """
    gen = torch.Generator().manual_seed(SEED)
    cfg = engine.config
    pooled = torch.randn(n, feats.pooled.shape[1], generator=gen)
    stages = {s: torch.randn(n, *t.shape[1:], generator=gen) for s, t in feats.stages.items()}
    manifest = GalleryManifest(
        backbone=engine.spec.name,
        weights_sha256=engine.spec.weights_sha256,
        preprocessing=manifest_preprocessing(cfg, engine.spec),
        stages=list(cfg.stages),
        stage_shapes={f"stage{s}": list(t.shape[1:]) for s, t in stages.items()},
        spade=spade_params(cfg),
        image_count=n,
        sources=[SourceImage(name=f"synthetic_{i:04d}.png", sha256=FAKE_SHA256) for i in range(n)],
        created_at=utc_now(),
        storage_dtype="float16" if float16 else "float32",
    )
    return Gallery(manifest=manifest, pooled=pooled, stages=stages)


class ReferenceInspector(Inspector):
    """The matching path before the blocked kernel (spade.stage_maps on the dense gallery), for comparison."""

    def stage_map(
        self,
        stage: int,
        test: torch.Tensor,
        neighbours: torch.Tensor,
        exclude: list[list[int]] | None = None,
    ) -> torch.Tensor:
        """The dense, chunked search of spade.stage_maps (chunks of runtime.distance_chunk_mb)."""
        dense = self.gallery.stages[stage].to(test.device)
        return reference_stage_maps(test, dense, neighbours, self.chunk_bytes, self.engine.runtime.precision)


def build_engines(
    name: str, st: Settings, backbones: BackboneCache, runtime_name: str
) -> tuple[FeatureEngine, dict[tuple[int, str], FeatureEngine]]:
    """One extractor shared by an engine per K and kernel (pixel_k and pixel_kernel are all that differ).

    Raises:
        RuntimeError: the backbone runtime or a kernel asked for did not come up (the benchmark names it).
    """
    base = ModelConfig.model_validate(
        {
            "backbone": name,
            "resize_px": st.resize_px,
            "crop_px": st.crop_px,
            "pixel_search": st.pixel_search,
            "window_cells": st.window_cells,
        }
    )
    runtime = RuntimeConfig(device=st.device.type, backbone_runtime=runtime_name, pixel_kernel="torch")
    engine = FeatureEngine(base, runtime, backbones)
    if engine.backbone_runtime != runtime_name:
        raise RuntimeError(f"{name}: backbone runtime {runtime_name} refused: {engine.backbone_note}")
    per_k = {
        (k, kernel): FeatureEngine(
            base.model_copy(update={"pixel_k": k}),
            runtime.model_copy(update={"pixel_kernel": kernel}),
            backbones,
        )
        for k in st.ks
        for kernel in st.kernels
    }
    return engine, per_k


def _batch_features(
    engine: FeatureEngine, images: list[np.ndarray]
) -> tuple[Features, list[tuple[int, int, int, int]]]:
    feats, prepared = engine.extract(images, {})
    return feats, prepared.valid


def _time_batch(
    engine: FeatureEngine,
    inspectors: dict[tuple[int, str], Inspector],
    images: list[np.ndarray],
    st: Settings,
) -> tuple[dict[tuple[int, str], list[dict[str, float]]], int]:
    """Repeat extract + raw_scores for every K and kernel until ``repeats`` or the time budget; stage timings."""
    samples: dict[tuple[int, str], list[dict[str, float]]] = {key: [] for key in inspectors}
    start, reps = time.perf_counter(), 0
    while reps < st.repeats and (reps == 0 or time.perf_counter() - start < st.budget_s):
        timings: dict[str, float] = {}
        feats, prepared = engine.extract(images, timings)
        for key, inspector in inspectors.items():
            scales = UNIT_SCALES[: len(inspector.config.stages)]
            raw = inspector.raw_scores(feats, prepared.valid, None, scales)
            samples[key].append({**timings, **raw.timings_ms})
        reps += 1
    return samples, reps


def bench_backbone(name: str, st: Settings, images: list[np.ndarray]) -> list[Row]:
    """All runtime/kernel/batch/K rows of one backbone: warm up, then time the real engine code paths."""
    weights = "real" if name == REAL_WEIGHTS_BACKBONE else "random"
    backbones = BackboneCache(random_weights=weights == "random")
    rows: list[Row] = []
    gallery: Gallery | None = None
    for runtime_name in st.runtimes:
        engine, per_k = build_engines(name, st, backbones, runtime_name)
        feats, valid = _batch_features(engine, images[:1])
        gallery = gallery or synthetic_gallery(engine, feats, st.gallery_size, st.float16)
        kind = ReferenceInspector if st.reference else Inspector
        inspectors = {key: kind(e, gallery, require_calibration=False) for key, e in per_k.items()}
        for key, e in per_k.items():
            if key[1] == "fused" and e.fused is None:
                raise RuntimeError(f"{name}: the fused kernel is not available: {e.kernel_note}")
            warm = inspectors[key]  # warm-up of each matching path (batch 1)
            warm.raw_scores(feats, valid, None, UNIT_SCALES[: len(warm.config.stages)])
        rows += _bench_batches(name, weights, runtime_name, engine, inspectors, feats, images, st)
    return rows


def _bench_batches(
    name: str,
    weights: str,
    runtime_name: str,
    engine: FeatureEngine,
    inspectors: dict[tuple[int, str], Inspector],
    feats: Features,
    images: list[np.ndarray],
    st: Settings,
) -> list[Row]:
    shapes = {s: (t.shape[1], t.shape[2], t.shape[3]) for s, t in feats.stages.items()}
    bb_gflop = backbone_gflop(engine, st.crop_px)
    rows = []
    for batch in st.batches:
        _batch_features(engine, images[:batch])  # warm-up of the backbone at this batch shape
        samples, reps = _time_batch(engine, inspectors, images[:batch], st)
        for (k, kernel), runs in samples.items():
            k_used = min(k, st.gallery_size)
            knn_used = min(max(engine.config.image_k, k), st.gallery_size)
            stage_ms = {s: statistics.median(r[s] for r in runs) / batch for s in STAGE_NAMES}
            gflop = {
                "backbone": bb_gflop,
                "image_knn": knn_gflop(st.gallery_size, feats.pooled.shape[1], knn_used),
                "pixel_match": pixel_gflop(shapes, k_used),
            }
            rows.append(Row(name, weights, batch, k, reps, stage_ms, gflop, runtime_name, kernel))
    return rows


def floor_ms(row: Row, stage: str, gflops: float) -> float:
    """Arithmetic floor of a stage in ms per image at the measured GEMM rate."""
    return row.gflop[stage] / gflops * MS_PER_S


def format_timing_table(rows: Sequence[Row], gflops: float) -> list[str]:
    """Table 1: measured ms per image per stage, total, floor and total/floor."""
    heads = [STAGE_HEADS[s] for s in STAGE_NAMES]
    head = (
        f"{'backbone':<18} {'runtime':<8} {'kernel':<9} {'weights':<7} {'B':>3} {'K':>3} {'reps':>4} "
        + " ".join(f"{h:>9}" for h in [*heads, "total", "floor", "ratio"])
    )
    lines = ["== ms per image (median over reps; total = sum of stage medians)", head]
    for r in rows:
        floor = sum(floor_ms(r, s, gflops) for s in FLOOR_STAGES)
        cells = [*(r.stage_ms[s] for s in STAGE_NAMES), r.total_ms]
        lines.append(
            f"{r.backbone:<18} {r.runtime:<8} {r.kernel:<9} {r.weights:<7} {r.batch:>3} {r.k:>3} {r.reps:>4} "
            + " ".join(f"{v:>9.2f}" for v in cells)
            + f" {floor:>9.3f} {r.total_ms / floor:>9.2f}"
        )
    return lines


def format_floor_table(rows: Sequence[Row], gflops: float) -> list[str]:
    """Table 2: FLOPs, floor and measured/floor per stage that has an arithmetic floor."""
    cols = [f"{p}_{s}" for p in ("gflop", "floor_ms", "ratio") for s in ("bb", "knn", "pix")]
    head = f"{'backbone':<18} {'runtime':<8} {'kernel':<9} {'B':>3} {'K':>3} " + " ".join(
        f"{c:>12}" for c in cols
    )
    lines = [
        "== arithmetic floor per stage (per image; bb=backbone, knn=image kNN, pix=pixel matching)",
        head,
    ]
    for r in rows:
        floors = [floor_ms(r, s, gflops) for s in FLOOR_STAGES]
        ratios = [r.stage_ms[s] / f for s, f in zip(FLOOR_STAGES, floors, strict=True)]
        cells = [f"{r.gflop[s]:>12.4g}" for s in FLOOR_STAGES] + [f"{v:>12.4g}" for v in floors + ratios]
        lines.append(
            f"{r.backbone:<18} {r.runtime:<8} {r.kernel:<9} {r.batch:>3} {r.k:>3} " + " ".join(cells)
        )
    return lines


def _cell(ms: float, floor: float) -> str:
    return f"{ms:8.2f} ({ms / floor:5.2f})"


def format_side_by_side(rows: Sequence[Row], gflops: float, st: Settings) -> list[str]:
    """Table 3: each kernel's pixel matching and each runtime's backbone with floor ratios, and the frame.

    Pixel matching is read from the rows of the first runtime, the backbone from the rows of the first
    kernel; the frame (sum of every stage) of the first runtime and kernel (before) against the last (after).
    """
    found = {(r.backbone, r.batch, r.k, r.runtime, r.kernel): r for r in rows}
    first_rt, last_rt, first_k, last_k = st.runtimes[0], st.runtimes[-1], st.kernels[0], st.kernels[-1]
    pix_heads = [f"pix {k} ms (ratio)" for k in st.kernels]
    bb_heads = [f"bb {rt} ms (ratio)" for rt in st.runtimes]
    lines = [
        (
            "== side by side, ms per image (ratio to the floor): pixel matching per kernel, backbone per "
            f"runtime, whole frame before ({first_rt}+{first_k}) and after ({last_rt}+{last_k})"
        ),
        f"{'backbone':<18} {'B':>3} {'K':>3} "
        + " ".join(f"{h:>20}" for h in [*pix_heads, *bb_heads, "frame before", "frame after"])
        + f" {'pix x':>6} {'bb x':>6} {'frame x':>7} {'after fps':>9}",
    ]
    for r in rows:
        if r.runtime != first_rt or r.kernel != first_k:
            continue
        key = (r.backbone, r.batch, r.k)
        pix = [found[(*key, first_rt, k)].stage_ms["pixel_match"] for k in st.kernels]
        bb = [found[(*key, rt, first_k)].stage_ms["backbone"] for rt in st.runtimes]
        before, after = found[(*key, first_rt, first_k)], found[(*key, last_rt, last_k)]
        pf, bf = floor_ms(r, "pixel_match", gflops), floor_ms(r, "backbone", gflops)
        full = sum(floor_ms(r, s, gflops) for s in FLOOR_STAGES)
        cells = [_cell(v, pf) for v in pix] + [_cell(v, bf) for v in bb]
        cells += [_cell(before.total_ms, full), _cell(after.total_ms, full)]
        lines.append(
            f"{r.backbone:<18} {r.batch:>3} {r.k:>3} "
            + " ".join(f"{c:>20}" for c in cells)
            + f" {pix[0] / pix[-1]:>6.2f} {bb[0] / bb[-1]:>6.2f} {before.total_ms / after.total_ms:>7.2f}"
            + f" {MS_PER_S / after.total_ms:>9.1f}"
        )
    lines += [
        "",
        "x = before / after (first / last kernel, runtime, both); after fps = 1000 / frame after ms",
    ]
    return lines


def header_lines(st: Settings, gemm: tuple[float, float]) -> list[str]:
    """Run context: versions, device, threads, GEMM rate and what was measured."""
    dev = torch.cuda.get_device_name(st.device) if st.device.type == "cuda" else "cpu"
    return [
        (
            f"torch {torch.__version__}  device {st.device} ({dev})  threads {torch.get_num_threads()} "
            f"(interop {torch.get_num_interop_threads()})"
        ),
        (
            f"GEMM float32 {st.gemm_px}^3, best of {st.gemm_repeats}: {gemm[0]:.1f} GFLOP/s at start, "
            f"{gemm[1]:.1f} at end; floor uses the better, {max(gemm):.1f} GFLOP/s"
        ),
        (
            f"gallery: in memory, N={st.gallery_size} images of random features with the backbone's real "
            f"stage shapes (no calibration; Inspector.raw_scores), banks in "
            f"{'float16' if st.float16 else 'float32'}; pixel search {st.pixel_search}"
            + (f" (window_cells {st.window_cells})" if st.pixel_search == "window" else "")
            + (" with spade.stage_maps (the reference path)" if st.reference else " with kernel.stage_maps")
        ),
        f"pixel kernels {', '.join(st.kernels)}; backbone runtimes {', '.join(st.runtimes)}; {cpu_model()}",
        *(
            ["window search: the floor shown is the full search's, so its ratio is the share of that floor"]
            if st.pixel_search == "window" and not st.reference
            else []
        ),
        (
            f"images: synthetic demo parts {st.image_px}px -> resize {st.resize_px} -> crop {st.crop_px}; "
            f"ModelConfig defaults: stages {DEFAULTS.stages}, image_k {DEFAULTS.image_k}, "
            f"sigma {DEFAULTS.blur_sigma_px} px, distance chunk {RUNTIME_DEFAULTS.distance_chunk_mb} MiB"
        ),
        "floor = (backbone FLOPs + distance FLOPs) / GEMM rate; preprocess and up+blur have no FLOP floor",
        (
            f"warm-up: matching once at B=1, K={min(st.ks)}; backbone once per batch size. reps: up to "
            f"{st.repeats}, fewer once a batch has used {st.budget_s:.0f} s"
        ),
    ]


QUICK = {
    "backbones": "efficientnet_lite0,wide_resnet50_2",
    "batches": "1,2",
    "ks": "1,3",
    "repeats": 1,
    "budget_s": 0.0,
    "gallery_size": 4,
    "image_px": 64,
    "resize_px": 64,
    "crop_px": 64,
    "gemm_px": 256,
}
FULL = {
    "backbones": "efficientnet_lite0,wide_resnet50_2",
    "batches": "1,8",
    "ks": "10,50",
    "repeats": 3,
    "budget_s": 30.0,
    "gallery_size": 60,
    "image_px": 256,
    "resize_px": 256,
    "crop_px": 224,
    "gemm_px": 2048,
}


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def parse_args(argv: Sequence[str] | None) -> Settings:
    """Parse options; --quick changes the defaults of every option not given explicitly."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    p.add_argument("--backbones", help="comma-separated backbone names")
    p.add_argument("--batches", help="comma-separated batch sizes")
    p.add_argument("--ks", help="comma-separated pixel_k values")
    p.add_argument("--repeats", type=int, help="timed repetitions per batch (median is reported)")
    p.add_argument("--budget-s", dest="budget_s", type=float, help="stop repeating a batch after this many s")
    p.add_argument("--gallery-size", dest="gallery_size", type=int, help="synthetic gallery images N")
    p.add_argument("--image-px", dest="image_px", type=int, help="side of the synthetic input images")
    p.add_argument("--resize-px", dest="resize_px", type=int)
    p.add_argument("--crop-px", dest="crop_px", type=int)
    p.add_argument("--gemm-px", dest="gemm_px", type=int, help="side of the GEMM used for the rate")
    p.add_argument("--gemm-repeats", dest="gemm_repeats", type=int, default=3)
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--pixel-search", dest="pixel_search", choices=("full", "window"), default="full")
    p.add_argument("--window-cells", dest="window_cells", type=int, default=DEFAULTS.window_cells)
    p.add_argument("--float16", action="store_true", help="gallery banks stored in float16")
    p.add_argument(
        "--reference", action="store_true", help="match with spade.stage_maps, the path before the kernel"
    )
    p.add_argument(
        "--kernel",
        dest="kernels",
        help="comma-separated pixel kernels, first = before: torch,fused (default both on CPU, torch on CUDA)",
    )
    p.add_argument(
        "--backbone-runtime",
        dest="runtimes",
        help="comma-separated backbone runtimes, first = before: torch,openvino (default both on CPU, torch on CUDA)",
    )
    ns = p.parse_args(argv)
    if ns.threads is not None:
        torch.set_num_threads(max(1, ns.threads))
    d = {**(QUICK if ns.quick else FULL), **{k: v for k, v in vars(ns).items() if v is not None}}
    device = resolve_device(d["device"])
    cpu = device.type == "cpu"
    single_kernel = (
        bool(d["reference"]) or d["pixel_search"] == "window"
    )  # the fused kernel is not used there
    st = Settings(
        device=device,
        backbones=tuple(str(d["backbones"]).split(",")),
        batches=_ints(str(d["batches"])),
        ks=_ints(str(d["ks"])),
        repeats=int(d["repeats"]),
        budget_s=float(d["budget_s"]),
        gallery_size=int(d["gallery_size"]),
        image_px=int(d["image_px"]),
        resize_px=int(d["resize_px"]),
        crop_px=int(d["crop_px"]),
        gemm_px=int(d["gemm_px"]),
        gemm_repeats=int(d["gemm_repeats"]),
        pixel_search=str(d["pixel_search"]),
        window_cells=int(d["window_cells"]),
        float16=bool(d["float16"]),
        reference=bool(d["reference"]),
        kernels=tuple(
            str(d.get("kernels") or ("torch,fused" if cpu and not single_kernel else "torch")).split(",")
        ),
        runtimes=tuple(str(d.get("runtimes") or ("torch,openvino" if cpu else "torch")).split(",")),
    )
    if not set(st.kernels) <= {"torch", "fused"} or not set(st.runtimes) <= {"torch", "openvino"}:
        p.error("--kernel takes torch/fused, --backbone-runtime torch/openvino")
    if st.repeats < 1 or st.gallery_size < 1 or not st.batches or not st.ks or min(st.batches + st.ks) < 1:
        p.error("--repeats, --gallery-size, --batches and --ks must be positive")
    return st


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the tables."""
    st = parse_args(argv)
    started, cpu_started, load_start = time.perf_counter(), time.process_time(), os.getloadavg()[0]
    gemm_start = gemm_gflops(st.device, st.gemm_px, st.gemm_repeats)
    images = make_images(max(st.batches), st.image_px)
    rows = [row for name in st.backbones for row in bench_backbone(name, st, images)]
    gemm = (gemm_start, gemm_gflops(st.device, st.gemm_px, st.gemm_repeats))
    rate = max(gemm)
    lines = [
        *header_lines(st, gemm),
        "",
        *format_timing_table(rows, rate),
        "",
        *format_floor_table(rows, rate),
        "",
        *format_side_by_side(rows, rate, st),
    ]
    wall = time.perf_counter() - started
    lines.append(
        f"\nbenchmark wall time {wall:.1f} s; this process used {(time.process_time() - cpu_started) / wall:.2f} "
        f"CPUs on average; 1-min load average {load_start:.2f} at start, {os.getloadavg()[0]:.2f} at end "
        f"({os.cpu_count()} CPUs): a load above the CPU count means other work shared the machine"
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Backbone benchmark: ms per image against its FLOP floor, and the factor of each CPU option, in one run.

Options measured on the real extractor at the default crop (224): the layout (contiguous / channels-last),
intra-op threads, batch size (batching across cameras), OpenVINO's CPU runtime (float32, as the engine runs
it) and, with --compile, ``torch.compile``. Every row
prints its ratio to the floor (the extractor's FLOPs / the float32 GEMM rate measured in the same run) and
its factor against the baseline row (contiguous, all threads, same batch).

    .venv/bin/python tools/bench_backbone.py                      # efficientnet_lite0, batches 1 and 8
    .venv/bin/python tools/bench_backbone.py --backbones efficientnet_lite0,wide_resnet50_2 --compile
"""

from __future__ import annotations

import inspector as _package  # noqa: F401 - first: sets OMP_WAIT_POLICY before torch loads

# isort: split

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from bench_spade import REAL_WEIGHTS_BACKBONE, backbone_gflop, gemm_gflops

from inspector.config.model import ModelConfig
from inspector.config.runtime import RuntimeConfig
from inspector.model.engine import BackboneCache, FeatureEngine

MS_PER_S = 1e3
SEED = 0


@dataclass(frozen=True)
class Variant:
    """One way of running the extractor."""

    label: str
    channels_last: bool
    threads: int
    compiled: bool = False
    openvino: bool = (
        False  # OpenVINO's CPU runtime (float32), as runtime.backbone_runtime = "openvino" runs it
    )


def _time_ms(run: Callable[[], object], repeats: int, budget_s: float) -> float:
    """Median wall time of ``run`` in ms after one warm-up call; stops early once ``budget_s`` is used."""
    run()
    samples: list[float] = []
    started = time.perf_counter()
    while len(samples) < repeats and (not samples or time.perf_counter() - started < budget_s):
        t0 = time.perf_counter()
        run()
        samples.append((time.perf_counter() - t0) * MS_PER_S)
    return statistics.median(samples)


def measure(
    engine: FeatureEngine, variant: Variant, batch: int, crop_px: int, repeats: int, budget_s: float
) -> float:
    """ms per image of one variant at one batch size."""
    gen = torch.Generator().manual_seed(SEED)
    x = torch.randn(batch, 3, crop_px, crop_px, generator=gen)
    if variant.openvino:
        if engine.backbone_runtime != "openvino":
            raise RuntimeError(f"openvino backbone refused: {engine.backbone_note}")
        extractor = engine.extractor
        return _time_ms(lambda: extractor(x), repeats, budget_s) / batch
    model: torch.nn.Module = engine.torch_extractor
    if variant.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    fn: Callable[[torch.Tensor], object] = torch.compile(model) if variant.compiled else model
    previous = torch.get_num_threads()
    torch.set_num_threads(variant.threads)
    try:
        with torch.inference_mode():
            ms = _time_ms(lambda: fn(x), repeats, budget_s)
    finally:
        torch.set_num_threads(previous)
        engine.torch_extractor.to(memory_format=torch.contiguous_format)
    return ms / batch


def variants(threads: int, compiled: bool) -> list[Variant]:
    """The baseline first, then one change at a time."""
    out = [Variant("contiguous", False, threads), Variant("channels_last", True, threads)]
    if threads > 1:
        out += [Variant("contiguous 1 thread", False, 1), Variant("channels_last 1 thread", True, 1)]
    out.append(Variant("openvino", False, threads, openvino=True))
    if compiled:
        out += [
            Variant("compiled", False, threads, True),
            Variant("compiled channels_last", True, threads, True),
        ]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print one row per backbone, batch and variant."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbones", default=REAL_WEIGHTS_BACKBONE, help="comma-separated backbone names")
    p.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    p.add_argument("--crop-px", dest="crop_px", type=int, default=224)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--budget-s", dest="budget_s", type=float, default=10.0)
    p.add_argument("--gemm-px", dest="gemm_px", type=int, default=2048)
    p.add_argument("--compile", action="store_true", help="also time torch.compile (minutes to compile)")
    p.add_argument("--quick", action="store_true", help="crop 64, batches 1,2, one repeat, GEMM 256")
    ns = p.parse_args(argv)
    if ns.quick:
        ns.crop_px, ns.batches, ns.repeats, ns.gemm_px = 64, "1,2", 1, 256
    threads = torch.get_num_threads()
    gemm_start = gemm_gflops(torch.device("cpu"), ns.gemm_px, 3)
    rows: list[tuple[str, int, Variant, float, float]] = []
    for name in ns.backbones.split(","):
        cfg = ModelConfig.model_validate({"backbone": name, "resize_px": ns.crop_px, "crop_px": ns.crop_px})
        cache = BackboneCache(random_weights=name != REAL_WEIGHTS_BACKBONE)
        engine = FeatureEngine(cfg, RuntimeConfig(device="cpu", backbone_runtime="openvino"), cache)
        gflop = backbone_gflop(engine, ns.crop_px)
        for batch in (int(b) for b in ns.batches.split(",")):
            for v in variants(threads, ns.compile):
                rows.append(
                    (name, batch, v, measure(engine, v, batch, ns.crop_px, ns.repeats, ns.budget_s), gflop)
                )
    rate = max(gemm_start, gemm_gflops(torch.device("cpu"), ns.gemm_px, 3))
    print(
        f"torch {torch.__version__}, cpu, {threads} threads; GEMM float32 {ns.gemm_px}^3: {rate:.1f} GFLOP/s"
    )
    print(f"{'backbone':<18} {'B':>3} {'variant':<24} {'ms/img':>8} {'floor':>7} {'ratio':>6} {'factor':>7}")
    base: dict[tuple[str, int], float] = {}
    for name, batch, v, ms, gflop in rows:
        base.setdefault((name, batch), ms)
        floor = gflop / rate * MS_PER_S
        factor = base[(name, batch)] / ms
        print(
            f"{name:<18} {batch:>3} {v.label:<24} {ms:>8.2f} {floor:>7.2f} {ms / floor:>6.2f} {factor:>7.2f}"
        )
    print("factor = baseline (contiguous, all threads, same batch) ms / this row's ms; ratio = ms / floor")
    return 0


if __name__ == "__main__":
    sys.exit(main())

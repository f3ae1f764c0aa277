"""Daemon benchmark: capture-to-publish latency and throughput for N file cameras, next to the engine's own speed.

Runs everything on this machine: builds a small gallery of synthetic parts, writes one video per camera,
measures the engine alone (``Inspector.score`` on batches of ``max_batch`` frames), then runs the real
daemon in-process twice (cameras paced at ``--fps``, then offered more than it can take at
``--saturate-fps``) while a ZeroMQ subscriber records every verdict's ``latency_ms.end_to_end``.

    .venv/bin/python tools/bench_daemon.py            # 4 cameras, 160 px frames, crop 128, max_batch 4
    .venv/bin/python tools/bench_daemon.py --resize-px 256 --crop-px 224 --size-px 256
    .venv/bin/python tools/bench_daemon.py --model defaults --resize-px 256 --crop-px 224 --size-px 256
    .venv/bin/python tools/bench_daemon.py --model defaults --resize-px 256 --crop-px 224 --size-px 256 \
        --gallery-images 209 --compare-pixel-search memory_bank --engine-only   # two searches, one run
"""

from __future__ import annotations

import inspector as _package  # noqa: F401 - first: sets OMP_WAIT_POLICY before torch loads

# isort: split

import argparse
import dataclasses
import importlib
import multiprocessing
import os
import queue
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import zmq
from prometheus_client import CollectorRegistry

from inspector.bus.wire import decode_verdict
from inspector.config.batching import BatchingConfig
from inspector.config.bus import BusConfig
from inspector.config.camera import CameraConfig
from inspector.config.logs import LoggingConfig
from inspector.config.metrics import MetricsConfig
from inspector.config.model import ModelConfig
from inspector.config.root import InspectorConfig
from inspector.config.runtime import RuntimeConfig
from inspector.config.worker import WorkerConfig
from inspector.core.names import COMPUTE_STAGES
from inspector.daemon.lifecycle import Daemon
from inspector.demo.daemon import DEMO_MODEL, DaemonDemoSettings, build_demo_gallery
from inspector.demo.data import read_video_frames, write_demo_video
from inspector.model.engine import Inspector
from inspector.ops.logs import configure_logging
from inspector.ops.sdnotify import SdNotifier

MS_PER_S = 1000.0
VIDEO_FRAMES = 40
DEFECT_EVERY = 4
ENGINE_WARMUP_S = 5.0
ENGINE_MEASURE_S = 10.0
READY_TIMEOUT_S = 300.0
JOIN_TIMEOUT_S = 120.0
POLL_MS = 50
FIRST_CAMERA_SEED = 100
PERCENTILES = (50.0, 99.0)
MIB = float(1 << 20)
MEMORY_ALLOWANCE_MB = 500.0  # resident memory allowed beyond the gallery and model bytes (issue 12)
LIBRARIES = ("timm", "cv2", "openvino")  # imported by the daemon when it builds a backbone / opens a camera


def cpu_model() -> str:
    """The CPU's model name as lscpu prints it (from /proc/cpuinfo)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return "CPU " + line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "CPU unknown"


def resident_mb() -> tuple[float, float]:
    """(current, peak) resident memory of this process in MiB, from /proc/self/status (0 where unknown)."""
    found = {"VmRSS": 0.0, "VmHWM": 0.0}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in found:
                found[key] = float(value.split()[0]) / 1024.0
    except OSError:
        pass
    return found["VmRSS"], found["VmHWM"]


def model_and_gallery_mb(gallery: Path, runtime: RuntimeConfig) -> tuple[float, float]:
    """(gallery file, backbone parameters and buffers) in MiB."""
    inspector = Inspector.from_gallery(gallery, runtime)
    module = inspector.engine.torch_extractor
    tensors = [*module.parameters(), *module.buffers()]
    return gallery.stat().st_size / MIB, sum(t.numel() * t.element_size() for t in tensors) / MIB


@dataclass(frozen=True)
class PhaseResult:
    """What one daemon run measured inside its measurement window."""

    label: str
    offered_fps: float
    captured_fps: float
    published: int
    throughput_fps: float
    p50_ms: float
    p99_ms: float
    mean_batch: float
    dropped: dict[str, int]
    verdicts: dict[str, int]
    rss_mb: float = 0.0
    overhead_p50_ms: float = 0.0  # end-to-end minus the batch's compute (the engine's stage timings)
    overhead_p99_ms: float = 0.0
    parts_p99_ms: dict[str, float] = dataclasses.field(default_factory=dict)  # queue / encode / the rest
    peak_rss_mb: float = 0.0  # VmHWM of the process that ran only this phase's daemon
    libraries_rss_mb: float = 0.0  # its resident memory before the daemon started (libraries imported)
    cpu_ms_per_frame: float = 0.0  # CPU time of the daemon's process (all its threads) per published verdict


def add_sink_phase_args(p: argparse.ArgumentParser) -> None:
    """The daemon-phase options of the sink benchmarks (bench_parts, bench_mqtt): the sink off, then on."""
    p.add_argument("--no-daemon", action="store_true", help="skip the daemon phases")
    p.add_argument("--cameras", type=int, default=2, help="daemon phases: paced file cameras (default 2)")
    p.add_argument("--fps", type=float, default=2.0, help="daemon phases: frames/s per camera (default 2)")
    p.add_argument(
        "--measure-s", type=float, default=30.0, help="daemon phases: measured seconds (default 30)"
    )
    p.add_argument("--warmup-s", type=float, default=3.0, help="daemon phases: ignored seconds after ready")
    p.add_argument("--size-px", type=int, default=160, help="daemon phases: video frame side (default 160)")
    p.add_argument("--gallery-images", type=int, default=30, help="daemon phases: gallery size (default 30)")
    p.add_argument("--max-batch", type=int, default=4, help="daemon phases: batching.max_batch")
    p.add_argument("--max-wait-ms", type=float, default=0.0, help="daemon phases: batching.max_wait_ms")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cameras", type=int, default=4, help="file cameras (default 4)")
    p.add_argument("--fps", type=float, default=5.0, help="paced phase: frames/s per camera (default 5)")
    p.add_argument(
        "--paced-cameras",
        type=int,
        default=None,
        help="cameras of the paced phase (default all); 1 measures light load without two cameras' frames "
        "arriving together, where the second waits for the first one's batch",
    )
    p.add_argument("--saturate-fps", type=float, default=25.0, help="saturated phase: frames/s per camera")
    p.add_argument("--max-batch", type=int, default=4, help="batching.max_batch (default 4)")
    p.add_argument(
        "--max-wait-ms",
        type=float,
        default=BatchingConfig().max_wait_ms,
        help=f"batching.max_wait_ms (default {BatchingConfig().max_wait_ms:g}, the daemon's)",
    )
    p.add_argument("--warmup-s", type=float, default=3.0, help="seconds ignored after ready (default 3)")
    p.add_argument("--measure-s", type=float, default=20.0, help="measurement window per phase (default 20)")
    p.add_argument("--size-px", type=int, default=160, help="video frame side (default 160)")
    p.add_argument("--resize-px", type=int, default=DEMO_MODEL.resize_px)
    p.add_argument("--crop-px", type=int, default=DEMO_MODEL.crop_px)
    p.add_argument("--gallery-images", type=int, default=30)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument(
        "--backbone-runtime",
        dest="backbone_runtime",
        choices=["auto", "torch", "openvino"],
        default="auto",
        help="runtime.backbone_runtime of the engine and the daemon (default auto, the daemon's)",
    )
    p.add_argument(
        "--kernel",
        dest="pixel_kernel",
        choices=["auto", "torch", "fused"],
        default="auto",
        help="runtime.pixel_kernel of the engine and the daemon (default auto, the daemon's)",
    )
    p.add_argument(
        "--model",
        choices=["demo", "defaults"],
        default="demo",
        help="SPADE settings: the demo's small ones (default) or the engine's defaults",
    )
    p.add_argument("--pixel-search", choices=["full", "window", "memory_bank"], default=None,
                   help="model.pixel_search (default: the --model settings')")  # fmt: skip
    p.add_argument(
        "--coreset-fraction", type=float, default=None, help="model.coreset_fraction (memory_bank)"
    )
    p.add_argument(
        "--compare-pixel-search", choices=["full", "window", "memory_bank"], default=None,
        help="also measure the engine alone on a gallery of the same images with this pixel search, in turns "
        "with the first (same run, same load)",
    )  # fmt: skip
    p.add_argument("--engine-only", action="store_true", help="measure the engine alone, no daemon phases")
    args = p.parse_args(argv)
    if args.paced_cameras is None:
        args.paced_cameras = args.cameras
    if not 1 <= args.paced_cameras <= args.cameras:
        p.error(f"--paced-cameras must be between 1 and --cameras ({args.cameras})")
    return args


@dataclass(frozen=True)
class EngineRun:
    """The engine alone: median wall and CPU time per frame, and what ran the backbone and the search."""

    ms: float
    cpu_ms: float
    used: str


def engine_ms_per_frame(
    gallery: Path, runtime: RuntimeConfig, frames: list[np.ndarray], batch: int
) -> EngineRun:
    """Median Inspector.score time per frame on batches of ``batch`` frames, after a timed warm-up.

    PyTorch on CPU is several times slower on its first calls (kernel selection, allocator), so batches
    are scored for ENGINE_WARMUP_S before ENGINE_MEASURE_S of measurement. The CPU time (every thread of this
    process) shows what the machine's other work took away and whether idle threads spin.
    """
    inspector = Inspector.from_gallery(gallery, runtime)
    batches = [frames[i : i + batch] for i in range(0, len(frames) - batch + 1, batch)]
    per_frame: list[float] = []
    cpu_per_frame: list[float] = []
    started = time.monotonic()
    index = 0
    while time.monotonic() - started < ENGINE_WARMUP_S + ENGINE_MEASURE_S:
        t0, c0 = time.perf_counter(), time.process_time()
        inspector.score(batches[index % len(batches)])
        if time.monotonic() - started >= ENGINE_WARMUP_S:
            per_frame.append((time.perf_counter() - t0) * MS_PER_S / batch)
            cpu_per_frame.append((time.process_time() - c0) * MS_PER_S / batch)
        index += 1
    engine = inspector.engine
    fused = engine.fused.best_isa if engine.fused is not None else f"no ({engine.kernel_note})"
    used = f"backbone {engine.backbone_runtime}{f' ({engine.backbone_note})' if engine.backbone_note else ''}, fused kernel {fused}"
    return EngineRun(float(np.median(per_frame)), float(np.median(cpu_per_frame)), used)


def phase_config(
    args: argparse.Namespace, videos: list[Path], gallery: Path, runtime: RuntimeConfig, fps: float
) -> InspectorConfig:
    """Daemon configuration of one phase: looping paced file cameras, bus on a free port, no metrics."""
    cameras = [
        CameraConfig(name=f"cam{i}", source=str(v), fps=fps, loop=True, queue_size=8)
        for i, v in enumerate(videos)
    ]
    return InspectorConfig(
        runtime=runtime,
        cameras=cameras,
        worker=WorkerConfig(gallery=gallery),
        batching=BatchingConfig(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, deadline_ms=60_000.0),
        bus=BusConfig(bind="tcp://127.0.0.1:*"),
        metrics=MetricsConfig(enabled=False),
        logging=LoggingConfig(level="warning"),
    )


def sink_phase_base(args: argparse.Namespace, work: Path) -> InspectorConfig:
    """The sink benchmarks' daemon (bench_parts, bench_mqtt) with its sink off: a demo gallery and
    ``args.cameras`` paced demo videos written under ``work``."""
    runtime = RuntimeConfig()
    settings = DaemonDemoSettings(size_px=args.size_px, gallery_images=args.gallery_images, runtime=runtime)
    gallery = build_demo_gallery(work, settings)
    videos = [work / f"cam{i}.avi" for i in range(args.cameras)]
    for i, video in enumerate(videos):
        write_demo_video(video, VIDEO_FRAMES, args.fps, DEFECT_EVERY, args.size_px, FIRST_CAMERA_SEED + i)
    return phase_config(args, videos, gallery, runtime, args.fps)


@dataclass(frozen=True)
class Totals:
    """Daemon counters at one instant, all cameras together."""

    captured: int
    dropped: dict[str, int]
    batches: float
    batched_frames: float


def _totals(daemon: Daemon) -> Totals:
    """Frames captured, dropped (by reason) and batched so far."""
    captured = 0
    dropped: dict[str, int] = {}
    for counts in daemon.status.summary()["cameras"].values():
        captured += counts["captured"]
        for reason, n in counts["dropped"].items():
            dropped[reason] = dropped.get(reason, 0) + n
    registry = daemon.metrics.registry
    batches = registry.get_sample_value("inspector_batch_size_count") or 0.0
    frames = registry.get_sample_value("inspector_batch_size_sum") or 0.0
    return Totals(captured, dropped, batches, frames)


def _wait_all_cameras(sub: zmq.Socket[bytes], cameras: int) -> None:
    """Consume verdicts until every camera delivered one (camera processes take seconds to start)."""
    seen: set[str] = set()
    deadline = time.monotonic() + READY_TIMEOUT_S
    while len(seen) < cameras:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only cameras {sorted(seen)} delivered frames")
        if sub.poll(POLL_MS):
            _, header, _ = decode_verdict(sub.recv_multipart())
            seen.add(header.camera)


def run_phase(label: str, config: InspectorConfig, args: argparse.Namespace, offered: float) -> PhaseResult:
    """Run the daemon; measure for ``measure_s`` once every camera delivers and ``warmup_s`` passed; stop."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    daemon = Daemon(config, context, CollectorRegistry(), SdNotifier({}), {})
    runner = threading.Thread(target=daemon.run, daemon=True)
    runner.start()
    if not daemon.ready_event.wait(READY_TIMEOUT_S):
        raise RuntimeError(f"{label}: the daemon did not become ready")
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"verdict.")
    sub.connect(daemon.publisher.endpoint)
    _wait_all_cameras(sub, len(config.cameras))
    start = time.monotonic() + args.warmup_s
    end = start + args.measure_s
    latencies: list[float] = []
    overheads: list[float] = []
    breakdown: dict[str, list[float]] = {"queue": [], "encode": [], "rest": []}
    verdicts: dict[str, int] = {}
    first: Totals | None = None
    cpu_start = 0.0
    while time.monotonic() < end:
        if first is None and time.monotonic() >= start:
            first = _totals(daemon)
            cpu_start = time.process_time()
        if not sub.poll(POLL_MS):
            continue
        parts = sub.recv_multipart()
        if first is None:
            continue  # warm-up: queues filling, first batches
        _, header, _ = decode_verdict(parts)
        latencies.append(header.latency_ms["end_to_end"])
        compute = sum(header.latency_ms.get(stage, 0.0) for stage in COMPUTE_STAGES)
        overheads.append(header.latency_ms["end_to_end"] - compute)
        for part in ("queue", "encode"):
            breakdown[part].append(header.latency_ms.get(part, 0.0))
        breakdown["rest"].append(overheads[-1] - breakdown["queue"][-1] - breakdown["encode"][-1])
        verdicts[header.verdict] = verdicts.get(header.verdict, 0) + 1
    last = _totals(daemon)
    cpu_s = time.process_time() - cpu_start
    rss_mb = resident_mb()[0]
    daemon.request_stop("benchmark phase done")
    runner.join(JOIN_TIMEOUT_S)
    sub.close(linger=0)
    context.term()
    base = first or Totals(0, {}, 0.0, 0.0)
    dropped = {r: n - base.dropped.get(r, 0) for r, n in last.dropped.items()}
    p50, p99 = [float(np.percentile(latencies, q)) if latencies else 0.0 for q in PERCENTILES]
    o50, o99 = [float(np.percentile(overheads, q)) if overheads else 0.0 for q in PERCENTILES]
    parts_p99 = {k: float(np.percentile(v, PERCENTILES[-1])) for k, v in breakdown.items() if v}
    captured_fps = (last.captured - base.captured) / args.measure_s
    throughput = len(latencies) / args.measure_s
    batches = last.batches - base.batches
    mean_batch = (last.batched_frames - base.batched_frames) / batches if batches else 0.0
    return PhaseResult(
        label,
        offered,
        captured_fps,
        len(latencies),
        throughput,
        p50,
        p99,
        mean_batch,
        dropped,
        verdicts,
        rss_mb,
        o50,
        o99,
        parts_p99,
        cpu_ms_per_frame=cpu_s * MS_PER_S / len(latencies) if latencies else 0.0,
    )


def _phase_child(
    results: multiprocessing.Queue[PhaseResult],
    label: str,
    config: InspectorConfig,
    args: argparse.Namespace,
    offered: float,
) -> None:
    """Run one phase in this (spawned) process and report it with this process's peak resident memory."""
    configure_logging("warning", "console")
    for module in LIBRARIES:
        importlib.import_module(module)
    libraries = resident_mb()[0]
    result = run_phase(label, config, args, offered)
    results.put(dataclasses.replace(result, peak_rss_mb=resident_mb()[1], libraries_rss_mb=libraries))


def isolated_phase(
    label: str, config: InspectorConfig, args: argparse.Namespace, offered: float
) -> PhaseResult:
    """:func:`run_phase` in a fresh process holding nothing but the daemon (and one subscriber socket).

    Its peak resident memory is then the daemon's own (model, gallery, libraries, queues), not the benchmark's.
    """
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[PhaseResult] = context.Queue()
    child = context.Process(target=_phase_child, args=(results, label, config, args, offered))
    child.start()
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S + args.warmup_s + args.measure_s + JOIN_TIMEOUT_S
        while True:
            try:
                return results.get(timeout=POLL_MS / MS_PER_S)
            except queue.Empty:
                if not child.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"{label}: the phase process ended without a result") from None
    finally:
        child.join(JOIN_TIMEOUT_S)
        if child.is_alive():  # a phase past its deadline: do not leave its daemon running
            child.kill()
            child.join(JOIN_TIMEOUT_S)


def report(
    args: argparse.Namespace,
    model: ModelConfig,
    runtime: RuntimeConfig,
    engine: tuple[EngineRun, EngineRun],
    phases: list[PhaseResult],
    sizes_mb: tuple[float, float],
) -> None:
    """Print the results: the engine's time per frame (before and after the daemon runs), then each phase."""
    device = "cuda" if runtime.device != "cpu" and torch.cuda.is_available() else "cpu"
    engine_ms = sum(e.ms for e in engine) / len(engine)
    cpu_ms = sum(e.cpu_ms for e in engine) / len(engine)
    cpus = os.cpu_count() or 1
    print(
        f"bench_daemon: {args.cameras} file cameras ({args.paced_cameras} paced), {args.size_px}px frames, {args.model} model settings, "
        f"resize {model.resize_px} "
        f"crop {model.crop_px}, max_batch {args.max_batch}, max_wait_ms {args.max_wait_ms:g}, "
        f"device {device}, torch threads {torch.get_num_threads()}"
    )
    print(f"{engine[0].used}; {cpu_model()}; {cpus} CPUs")
    print(
        f"engine alone (Inspector.score, batch {args.max_batch}): {engine_ms:.1f} ms/frame "
        f"= {MS_PER_S / engine_ms:.1f} frames/s (before daemon runs {engine[0].ms:.1f}, after {engine[1].ms:.1f})"
    )
    print(
        f"engine CPU time {cpu_ms:.1f} ms/frame: {cpu_ms / engine_ms:.2f} of {cpus} CPUs busy while scoring "
        f"(CPU-time bound with all {cpus} CPUs its own: {MS_PER_S * cpus / cpu_ms:.1f} frames/s, reached only "
        f"if scoring kept every CPU busy; a busy machine also inflates CPU time through shared caches)"
    )
    for ph in phases:
        per_frame = MS_PER_S / ph.throughput_fps if ph.throughput_fps else float("inf")
        drops = ", ".join(f"{r} {n}" for r, n in sorted(ph.dropped.items()) if n) or "none"
        print(
            f"daemon {ph.label:<9} offered {ph.offered_fps:5.1f} fps, captured {ph.captured_fps:5.1f}, "
            f"published {ph.throughput_fps:5.1f} fps = {per_frame:5.1f} ms/frame "
            f"({per_frame / engine_ms:.2f}x engine) | mean batch {ph.mean_batch:.1f} | end-to-end p50 "
            f"{ph.p50_ms:.0f} ms, p99 {ph.p99_ms:.0f} ms | {dict(sorted(ph.verdicts.items()))} | dropped: {drops}"
            f" | minus compute p50 {ph.overhead_p50_ms:.1f} ms, p99 {ph.overhead_p99_ms:.1f} ms"
            f" (p99 of its parts: {', '.join(f'{k} {v:.1f}' for k, v in ph.parts_p99_ms.items())} ms)"
            f" | resident {ph.rss_mb:.0f} MiB (peak {ph.peak_rss_mb:.0f})"
            f" | daemon CPU {ph.cpu_ms_per_frame:.1f} ms/verdict ({ph.cpu_ms_per_frame / cpu_ms:.2f}x the engine's)"
        )
    gallery_mb, model_mb = sizes_mb
    budget = gallery_mb + model_mb + MEMORY_ALLOWANCE_MB
    worst = max(phases, key=lambda ph: ph.peak_rss_mb)
    own = worst.peak_rss_mb - worst.libraries_rss_mb
    print(
        f"memory: peak resident {worst.peak_rss_mb:.0f} MiB of the daemon's process ({worst.label}; its own "
        f"process per phase, camera processes not included), of which {worst.libraries_rss_mb:.0f} MiB before "
        f"the daemon started (torch, timm, OpenCV, pyzmq and the daemon's modules imported); the daemon's own "
        f"{own:.0f} MiB against gallery {gallery_mb:.1f} + model {model_mb:.1f} + {MEMORY_ALLOWANCE_MB:.0f} = "
        f"{budget:.0f} MiB: {'within' if own <= budget else 'OVER'} the bound; the whole process "
        f"{'within' if worst.peak_rss_mb <= budget else 'OVER'} it"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print one line per measurement."""
    args = parse_args(argv)
    configure_logging("warning", "console")
    base = DEMO_MODEL if args.model == "demo" else ModelConfig()
    update: dict[str, object] = {"resize_px": args.resize_px, "crop_px": args.crop_px}
    if args.pixel_search is not None:
        update["pixel_search"] = args.pixel_search
    if args.coreset_fraction is not None:
        update["coreset_fraction"] = args.coreset_fraction
    model = base.model_copy(update=update)
    runtime = RuntimeConfig(
        device=args.device, backbone_runtime=args.backbone_runtime, pixel_kernel=args.pixel_kernel
    )
    with tempfile.TemporaryDirectory(prefix="bench_daemon_") as tmp:
        work = Path(tmp)
        settings = DaemonDemoSettings(
            size_px=args.size_px, gallery_images=args.gallery_images, model=model, runtime=runtime
        )
        gallery = build_demo_gallery(work, settings)
        videos = []
        for i in range(args.cameras):
            videos.append(work / f"cam{i}.avi")
            write_demo_video(
                videos[-1], VIDEO_FRAMES, args.fps, DEFECT_EVERY, args.size_px, FIRST_CAMERA_SEED + i
            )
        frames = read_video_frames(videos[0])
        compare = None
        if args.compare_pixel_search is not None:
            other = model.model_copy(update={"pixel_search": args.compare_pixel_search})
            compare = build_demo_gallery(work / "compare", dataclasses.replace(settings, model=other))
        engine_before = engine_ms_per_frame(gallery, runtime, frames, args.max_batch)
        compared = [engine_ms_per_frame(compare, runtime, frames, args.max_batch)] if compare else []
        if args.engine_only:
            engine_after = engine_ms_per_frame(gallery, runtime, frames, args.max_batch)
            compared += [engine_ms_per_frame(compare, runtime, frames, args.max_batch)] if compare else []
            report_engines(args, model, (engine_before, engine_after), compared)
            return 0
        phases = [
            isolated_phase(
                "paced",
                phase_config(args, videos[: args.paced_cameras], gallery, runtime, args.fps),
                args,
                args.fps * args.paced_cameras,
            ),
            isolated_phase(
                "saturated",
                phase_config(args, videos, gallery, runtime, args.saturate_fps),
                args,
                args.saturate_fps * args.cameras,
            ),
        ]
        engine_after = engine_ms_per_frame(gallery, runtime, frames, args.max_batch)
        compared += [engine_ms_per_frame(compare, runtime, frames, args.max_batch)] if compare else []
        sizes = model_and_gallery_mb(gallery, runtime)
        report(args, model, runtime, (engine_before, engine_after), phases, sizes)
        report_engines(args, model, (engine_before, engine_after), compared)
    return 0


def report_engines(
    args: argparse.Namespace,
    model: ModelConfig,
    engine: tuple[EngineRun, EngineRun],
    compared: list[EngineRun],
) -> None:
    """The engine alone on the gallery and, with ``--compare-pixel-search``, on the compared one (in turns)."""
    ms = sum(e.ms for e in engine) / len(engine)
    print(
        f"engine alone, pixel_search {model.pixel_search} ({args.gallery_images} gallery images, resize "
        f"{model.resize_px} crop {model.crop_px}, batch {args.max_batch}): {ms:.1f} ms/frame = "
        f"{MS_PER_S / ms:.1f} frames/s ({', '.join(f'{e.ms:.1f}' for e in engine)}); {engine[0].used}; {cpu_model()}"
    )
    if compared:
        other = sum(e.ms for e in compared) / len(compared)
        print(
            f"engine alone, pixel_search {args.compare_pixel_search} (same images and settings): {other:.1f} "
            f"ms/frame = {MS_PER_S / other:.1f} frames/s ({', '.join(f'{e.ms:.1f}' for e in compared)}); "
            f"{other / ms:.2f}x the time of pixel_search {model.pixel_search}"
        )


if __name__ == "__main__":
    sys.exit(main())

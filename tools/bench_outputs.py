"""Outputs benchmark: what each output after the bus costs the pipeline's thread, against the bus itself.

The pipeline calls every sink's ``deliver`` on its own thread right after the bus sink published the verdict,
so an output's ``deliver`` must cost a small fraction of the bus's own publish (mask encoding and send). The
slow work (an archive record, an overlay JPEG) runs on the outputs' own threads; it is measured here too, as
a ratio to the same publish, so its share of a core can be judged for a line's FAIL rate.

    .venv/bin/python tools/bench_outputs.py                      # 1920 x 1080 frames, 224 px crops
    .venv/bin/python tools/bench_outputs.py --frame 640x480 --repeats 200
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import zmq
from prometheus_client import CollectorRegistry

from inspector.bus.publisher import Publisher
from inspector.bus.wire import Heartbeat, new_boot_id, rfc3339
from inspector.config.archive import ArchiveConfig
from inspector.config.bus import BusConfig
from inspector.config.drift import DriftConfig
from inspector.config.liveview import LiveViewConfig
from inspector.core.names import COMPUTE_STAGES
from inspector.core.records import Frame, Outcome
from inspector.daemon.sinks import BusSink
from inspector.model.maps import defect_mask
from inspector.model.preprocess import PreprocessSpec, crop_box
from inspector.ops.metrics import InspectorMetrics
from inspector.outputs.archive import DefectArchive
from inspector.outputs.drift import DriftTracker, Reference
from inspector.outputs.evidence import overlay_jpeg, render
from inspector.outputs.liveview import LiveView
from inspector.outputs.queued import QueuedSink
from inspector.outputs.ring import ResultsRing

MS_PER_S = 1000.0
US_PER_S = 1e6
PIXEL_THRESHOLD = 1.0
FRAME_NOISE_LEVELS = (
    3.0  # sensor noise in grey levels: PNG of a real frame is neither free nor incompressible
)
SPEC = PreprocessSpec(256, 224, False, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def synthetic_outcome(width: int, height: int, seq: int, rng: np.random.Generator) -> Outcome:
    """A scored FAIL outcome: a camera-like frame (smooth shading, mild noise), a map with one hot spot."""
    shade = np.linspace(40, 200, width, dtype=np.float32)[None, :, None] + np.zeros(
        (height, 1, 3), np.float32
    )
    noise = rng.normal(0.0, FRAME_NOISE_LEVELS, (height, width, 3)).astype(np.float32)
    frame = np.clip(shade + noise, 0, 255).astype(np.uint8)
    side = SPEC.crop_px
    amap = cv2.GaussianBlur(rng.random((side, side)).astype(np.float32), (0, 0), 4.0) * 0.5
    amap[100:130, 60:90] += 2.0
    mask = defect_mask(amap, PIXEL_THRESHOLD)
    crop = np.ascontiguousarray(frame[:side, :side])
    return Outcome(
        frame=Frame("cam1", seq, time.time(), time.monotonic(), frame),
        verdict="FAIL", score=3.0, threshold=2.0, defect_area_px=int(np.count_nonzero(mask)), gallery="0" * 64,
        defect_count=1,
        anomaly_map=amap, mask=mask, pixel_threshold=PIXEL_THRESHOLD, crop=crop,
        latency_ms=dict.fromkeys(("queue", *COMPUTE_STAGES), 1.0), crop_box=crop_box(height, width, SPEC), neighbours=("a.png", "b.png"),
    )  # fmt: skip


def per_call_us(call: Callable[[int], object], repeats: int) -> float:
    """Median microseconds of ``call(i)`` over ``repeats`` calls."""
    times = []
    for i in range(repeats):
        started = time.perf_counter()
        call(i)
        times.append((time.perf_counter() - started) * US_PER_S)
    return statistics.median(times)


def each(deliver: Callable[[Outcome], object], outcomes: list[Outcome]) -> Callable[[int], object]:
    """``deliver`` of the i-th outcome, cycling through ``outcomes``."""
    return lambda i: deliver(outcomes[i % len(outcomes)])


def deliver_rows(
    bus: BusSink, stamped: list[Outcome], metrics: InspectorMetrics, repeats: int, archive: DefectArchive
) -> dict[str, float]:
    """Microseconds of each output's ``deliver`` on the pipeline's thread (drift, ring, live view, archive)."""
    status = Heartbeat(boot_id=new_boot_id(), published_at=rfc3339(0.0), state="ready", uptime_s=0.0,
                       frames_published=0, worker_alive=True)  # fmt: skip
    queued = QueuedSink("archive", lambda _o: None, repeats + 1, metrics.outputs, wants=archive.wants)
    pipeline_side: dict[str, Callable[[Outcome], object]] = {
        "drift": DriftTracker(DriftConfig(), {"cam1": Reference(2.0, 0.5)}, metrics.outputs).deliver,
        "results ring": ResultsRing(16, 256.0).deliver,
        "live view": LiveView(["cam1"], LiveViewConfig(), lambda: status).deliver,
        "archive (queue put)": queued.deliver,
    }
    return {f"deliver: {name}": per_call_us(each(fn, stamped), repeats) for name, fn in pipeline_side.items()}


def off_path_rows(
    bus: BusSink, stamped: list[Outcome], archive: DefectArchive, size: tuple[int, int], calls: int
) -> dict[str, float]:
    """Microseconds of the work done on the outputs' own threads: an archive record, overlay JPEGs."""
    rng = np.random.default_rng(1)
    records = [bus.deliver(synthetic_outcome(*size, 1000 + i, rng)) for i in range(calls)]
    rows = {
        "off path: archive record (write + fsync)": per_call_us(lambda i: archive.write(records[i]), calls)
    }
    if len(archive.records()) != calls:
        raise RuntimeError(f"{calls - len(archive.records())} archive writes were skipped: see the log")
    rows["off path: overlay.jpg, full frame (results)"] = per_call_us(
        lambda i: render(stamped[i % len(stamped)], "overlay.jpg", 80), calls
    )
    width_px = LiveViewConfig().image_width_px
    rows[f"off path: overlay.jpg at {width_px} px (live view)"] = per_call_us(
        lambda i: overlay_jpeg(stamped[i % len(stamped)], 80, width_px), calls
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    """Measure every output's deliver and the off-path work, each as a ratio to the bus publish."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--frame", default="1920x1080", help="camera frame WIDTHxHEIGHT")
    parser.add_argument("--repeats", type=int, default=100, help="calls measured per row (median reported)")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.frame.lower().split("x"))
    rng = np.random.default_rng(0)
    outcomes = [synthetic_outcome(width, height, i, rng) for i in range(8)]
    metrics = InspectorMetrics(CollectorRegistry(), include_process_collector=False)
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    publisher = Publisher(BusConfig(bind="tcp://127.0.0.1:*", linger_ms=0), context, new_boot_id())
    publisher.bind()
    bus = BusSink(publisher, metrics)
    stamped = [bus.deliver(o) for o in outcomes]
    rows = {"bus publish (reference)": per_call_us(each(bus.deliver, outcomes), args.repeats)}
    with tempfile.TemporaryDirectory() as folder:
        archive = DefectArchive(Path(folder), ArchiveConfig(max_total_mb=4096.0), metrics.outputs)
        archive.open()
        rows |= deliver_rows(bus, stamped, metrics, args.repeats, archive)
        rows |= off_path_rows(bus, stamped, archive, (width, height), max(10, args.repeats // 10))
    publisher.close()
    context.term()
    reference = rows["bus publish (reference)"]
    print(
        f"outputs benchmark: {width}x{height} frames, {SPEC.crop_px} px crops, median of {args.repeats} calls"
    )
    print(f"{'what':45s} {'us per outcome':>15s} {'x bus publish':>14s}")
    for name, us in rows.items():
        print(f"{name:45s} {us:15.1f} {us / reference:14.3f}")
    on_thread = sum(us for name, us in rows.items() if name.startswith("deliver"))
    print(
        f"every output's deliver together: {on_thread:.1f} us = {on_thread / reference:.3f} x the bus publish"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

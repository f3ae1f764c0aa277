"""Helpers shared by the tests: free ports, validated configs and the synthetic gallery builder."""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from inspector.bus.publisher import verdict_header
from inspector.bus.wire import (
    NO_MASK,
    new_boot_id,
    rfc3339,
)
from inspector.config.calibration import CalibrationConfig
from inspector.config.camera import CameraConfig
from inspector.config.model import ModelConfig
from inspector.config.root import InspectorConfig
from inspector.config.runtime import RuntimeConfig
from inspector.config.worker import WorkerConfig
from inspector.core.names import COMPUTE_STAGES, SCORED_VERDICTS, Verdict
from inspector.core.records import Frame, Outcome
from inspector.daemon.products import ProductRegistry, load_products, product_loader
from inspector.daemon.worker import ModelWorker
from inspector.demo.daemon import DEMO_MODEL
from inspector.demo.data import read_video_frames, write_demo_video, write_good_part_images
from inspector.model.build import build_gallery
from inspector.model.engine import BackboneCache
from inspector.model.gallery import read_gallery_hash
from inspector.model.thresholds import calibrate_gallery

FRAME_SIDE_PX = 160
GALLERY_IMAGES = 30
GALLERY_SEED = 7
VIDEO_FPS = 10.0
DEFECT_EVERY = 4
# Small and fast on 2 CPU cores: the demo's pinned settings (every setting that moves scores is explicit,
# not left to the engine's defaults, which are tuned for 224 px crops); map_max splits the synthetic parts cleanly.
TEST_MODEL = DEMO_MODEL
RUNTIME = RuntimeConfig()
POLL_S = 0.05
WAIT_S = 120.0  # default bound of wait_until
REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

CLI_TIMEOUT_S = 3600.0  # generous: real data on a busy 2-core machine
DAEMON_START_TIMEOUT_S = 120.0  # imports, gallery validation and warm-up on a loaded 2-core machine
DAEMON_STOP_TIMEOUT_S = 60.0
HTTP_TIMEOUT_S = 10.0

LabelledVideo = Callable[..., tuple[Path, list[str | None]]]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass(frozen=True)
class SyntheticGallery:
    """A calibrated gallery built from known-good demo frames; ``content_hash`` is its full gallery hash."""

    path: Path
    model: ModelConfig
    content_hash: str


def build_synthetic_gallery(folder: Path, n_images: int, seed: int) -> SyntheticGallery:
    """Build and calibrate a gallery from ``n_images`` good parts of a demo video.

    The good parts go through the same MJPG encoding as the cameras' videos, so the gallery and the live
    frames share one image domain (PNG-only galleries score every JPEG frame a little higher).
    """
    images = write_good_part_images(folder, n_images, VIDEO_FPS, FRAME_SIDE_PX, seed)
    gallery = folder / "gallery.safetensors"
    build_gallery(images, gallery, TEST_MODEL, RUNTIME)
    calibrate_gallery(gallery, RUNTIME, CalibrationConfig())
    return SyntheticGallery(gallery, TEST_MODEL, read_gallery_hash(gallery))


def load_registry(config: InspectorConfig, backbones: BackboneCache | None = None) -> ProductRegistry:
    """Every product of a config loaded as the daemon loads it (one backbone per network)."""
    return load_products(
        config, product_loader(config, backbones if backbones is not None else BackboneCache())
    )


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def model_config(**fields: Any) -> ModelConfig:
    """A validated model config: pydantic fills the defaults."""
    return ModelConfig.model_validate(fields)


def runtime_config(**fields: Any) -> RuntimeConfig:
    """A validated runtime config."""
    return RuntimeConfig.model_validate(fields)


def calibration_config(**fields: Any) -> CalibrationConfig:
    """A validated calibration config."""
    return CalibrationConfig.model_validate(fields)


def wait_until(condition: Callable[[], object], what: str, timeout_s: float = WAIT_S) -> None:
    """Poll ``condition`` until it is truthy; fail naming ``what`` after ``timeout_s``.

    The bound is generous on purpose (the suite runs on 2 shared, busy cores): it only turns a hang into a
    failure with a message, it never measures how fast something happened.
    """
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s:g} s waiting for {what}"
        time.sleep(POLL_S)


def run_cli(*args: str | Path, timeout_s: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """``inspector ARGS`` as a real process (``python -m inspector.cli``), output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "inspector.cli", *map(str, args)],
        capture_output=True, text=True, timeout=timeout_s, cwd=REPO_ROOT, check=False,
    )  # fmt: skip


def read_png(path: Path) -> np.ndarray:
    """A PNG read back unchanged (fails the test when it is missing or unreadable)."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, path
    return np.asarray(image)


def scrape(port: int) -> Samples:
    """Every sample of a /metrics endpoint on 127.0.0.1: (name, labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=HTTP_TIMEOUT_S) as response:
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def metric(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (0 when absent)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


@dataclass(frozen=True)
class ScoredLine:
    """Outcomes of a labelled demo video scored by the real worker and stamped as the bus sink stamps them."""

    boot_id: str
    outcomes: list[Outcome]
    labels: list[str | None]


def bus_outcome(frame: Frame, verdict: Verdict = "PASS", **fields: Any) -> Outcome:
    """An outcome as the model worker makes one, ready for the bus: PASS/FAIL scored (score 0.5 or 2.5
    against 1.0, pixel threshold 1.0, no defect pixel) with the queue and every compute stage timed;
    TIMEOUT/ERROR with a reason and only the queue timed. ``fields`` replace any of these."""
    if verdict in SCORED_VERDICTS:
        base: dict[str, Any] = {
            "score": 2.5 if verdict == "FAIL" else 0.5, "threshold": 1.0, "pixel_threshold": 1.0,
            "defect_area_px": 0, "latency_ms": dict.fromkeys(("queue", *COMPUTE_STAGES), 0.0),
        }  # fmt: skip
    else:
        base = {"error": f"{verdict.lower()} for the test", "latency_ms": {"queue": 0.0}}
    return Outcome(frame, verdict, **(base | fields))


def stamp_published(outcome: Outcome, boot_id: str, published_at: float) -> Outcome:
    """The outcome with ``published`` set as ``daemon.sinks.BusSink`` sets it (the bus's own header code)."""
    latency = {**outcome.latency_ms, "encode": 0.0, "end_to_end": outcome.latency_ms.get("queue", 0.0)}
    header = verdict_header(outcome, boot_id, rfc3339(published_at), latency, NO_MASK)
    return dataclasses.replace(outcome, published=header.model_dump_json())


def score_line(folder: Path, gallery: Path, camera: str, n_frames: int, seed: int) -> ScoredLine:
    """Score ``n_frames`` of a labelled demo video (one in ``DEFECT_EVERY`` defective) with the real worker."""
    video = folder / f"{camera}.avi"
    labels = write_demo_video(video, n_frames, VIDEO_FPS, DEFECT_EVERY, FRAME_SIDE_PX, seed)
    now = time.time()
    frames = [
        Frame(camera, i, now + i, time.monotonic(), image) for i, image in enumerate(read_video_frames(video))
    ]
    config = InspectorConfig(
        cameras=[CameraConfig(name=camera, source="0")], worker=WorkerConfig(gallery=gallery)
    )
    outcomes = ModelWorker(load_registry(config)).score(frames).outcomes
    boot_id = new_boot_id()
    return ScoredLine(boot_id, [stamp_published(o, boot_id, now + o.seq) for o in outcomes], labels)


def http_get(url: str) -> tuple[int, bytes, str]:
    """(status, body, content type) of a GET, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as response:
            return response.status, response.read(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        with exc:  # closes its connection now, not at garbage collection (a ResourceWarning in a later test)
            return exc.code, exc.read(), exc.headers.get("Content-Type", "")


def decode_image(data: bytes) -> np.ndarray:
    """An encoded PNG or JPEG decoded unchanged (fails the test when it is not an image)."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert image is not None, data[:40]
    return np.asarray(image)

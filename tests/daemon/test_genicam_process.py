"""A GenICam camera through the real daemon process, against Aravis' real fake GigE Vision camera: free-run
verdicts, reconnect, software triggers from the PLC, and a refused setting at start-up."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zmq

from inspector.config.calibration import CalibrationConfig
from inspector.core.names import EXIT_CONFIG
from inspector.model.build import build_gallery
from inspector.model.thresholds import calibrate_gallery
from tests.genicam import ADDRESS, FakeCamera, grab_frames
from tests.processes import DaemonProcess, Subscriber
from tests.support import RUNTIME, TEST_MODEL, free_port, metric, scrape, wait_until
from tests.toml_config import tcp, write_daemon_config

pytestmark = pytest.mark.genicam

CAMERA = "gige"
GALLERY_FRAMES = 16
FREE_RUN_RATE_HZ = 4.0
TRIGGERS = 20
TRIGGER_SPACING_S = 0.2  # a part every 200 ms
SCORED = ("PASS", "FAIL")
Context = zmq.Context[zmq.Socket[bytes]]


@pytest.fixture(scope="module")
def gallery(fake_camera: FakeCamera, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A calibrated gallery built from the fake camera's own frames (its own size, 512 x 512)."""
    folder = tmp_path_factory.mktemp("genicam_gallery")
    images = grab_frames(folder / "frames", GALLERY_FRAMES)
    path = folder / "fake.safetensors"
    build_gallery(images, path, TEST_MODEL, RUNTIME)
    calibrate_gallery(path, RUNTIME, CalibrationConfig())
    return path


@dataclass
class Line:
    """A running daemon with one GenICam camera, its bus subscriber and ports."""

    daemon: DaemonProcess
    bus: Subscriber
    ports: dict[str, int]

    def camera_up(self) -> float:
        return metric(scrape(self.ports["metrics"]), "inspector_camera_up", camera=CAMERA)


@pytest.fixture
def start_line(gallery: Path, tmp_path: Path) -> Iterator[Any]:
    """Factory: start the daemon with one genicam camera (``camera`` and ``genicam`` fields added)."""
    started: list[Line] = []

    def start(wait_ready: bool = True, **camera: Any) -> Line:
        ports = {name: free_port() for name in ("bus", "metrics", "triggers")}
        fields = {"name": CAMERA, "kind": "genicam", "source": ADDRESS, "gallery": gallery, **camera}
        config = write_daemon_config(
            tmp_path / f"genicam{len(started)}.toml",
            cameras=[fields],
            bus={"bind": tcp(ports["bus"])},
            metrics={"port": ports["metrics"]},
            triggers={"bind": tcp(ports["triggers"])},
        )
        line = Line(DaemonProcess(config), Subscriber(tcp(ports["bus"])), ports)
        started.append(line)
        if wait_ready:
            line.daemon.wait_event("daemon_ready")
        return line

    yield start
    for line in started:
        line.daemon.close()
        line.bus.close()


def scored_after(line: Line, count: int, after_seq: int = -1) -> None:
    def enough() -> bool:
        scored = [v for v in line.bus.got.of(CAMERA) if v.seq > after_seq and v.verdict in SCORED]
        return len(scored) >= count

    wait_until(enough, f"{count} scored verdicts after seq {after_seq}")


def test_free_run_frames_reach_verdicts_and_a_camera_killed_and_restarted_reconnects_up_0_then_1(
    fake_camera: FakeCamera, start_line: Any
) -> None:
    genicam = {"pixel_format": "Mono8", "frame_rate_hz": FREE_RUN_RATE_HZ}
    line = start_line(genicam=genicam, read_timeout_s=2.0, retry_initial_s=0.2, retry_max_s=1.0)
    scored_after(line, 5)
    first = line.bus.got.of(CAMERA)
    assert all(v.frame_id is not None and v.part_id is None for v in first), "the camera's block id travels"
    assert line.camera_up() == 1.0
    fake_camera.kill()
    wait_until(lambda: line.camera_up() == 0.0, "inspector_camera_up 0 after the camera died")
    wait_until(lambda: line.bus.got.cameras_up.get(CAMERA) is False, "a heartbeat saying the camera is down")
    last_before = max(v.seq for v in line.bus.got.of(CAMERA))
    fake_camera.start()
    wait_until(lambda: line.camera_up() == 1.0, "inspector_camera_up 1 after the camera came back")
    scored_after(line, 5, last_before)
    samples = scrape(line.ports["metrics"])
    assert metric(samples, "inspector_camera_reconnects_total", camera=CAMERA) >= 1
    assert ("inspector_camera_incomplete_frames_total", frozenset({("camera", CAMERA)})) in samples
    assert line.daemon.terminate() == 0
    seqs = [v.seq for v in line.bus.got.of(CAMERA)]
    assert seqs == sorted(set(seqs)), "no seq twice across the reconnect"


def test_twenty_plc_triggers_fire_the_camera_and_give_twenty_verdicts_with_their_part_ids_in_order(
    fake_camera: FakeCamera, start_line: Any
) -> None:
    genicam = {"pixel_format": "Mono8", "trigger_source": "software"}
    line = start_line(genicam=genicam, trigger="external", trigger_timeout_ms=5000.0)
    wait_until(lambda: line.camera_up() == 1.0, "the camera up")
    context: Context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(tcp(line.ports["triggers"]))
    parts = [f"P-{index:04d}" for index in range(TRIGGERS)]
    try:
        for part in parts:
            push.send(json.dumps({"camera": CAMERA, "part_id": part}).encode())
            time.sleep(TRIGGER_SPACING_S)
        wait_until(lambda: len(line.bus.got.of(CAMERA)) >= TRIGGERS, f"{TRIGGERS} verdicts")
    finally:
        push.close()
        context.term()
    verdicts = line.bus.got.of(CAMERA)
    assert [v.part_id for v in verdicts] == parts and [v.seq for v in verdicts] == list(range(TRIGGERS))
    assert [v.verdict for v in verdicts if v.verdict not in SCORED] == [], [v.error for v in verdicts]
    assert len({v.frame_id for v in verdicts}) == TRIGGERS, "each part its own frame"
    assert line.daemon.terminate() == 0


def test_a_value_the_camera_refuses_stops_the_daemon_with_exit_78_naming_camera_field_and_feature(
    fake_camera: FakeCamera, start_line: Any
) -> None:
    line = start_line(wait_ready=False, genicam={"exposure_us": 1e9})
    assert line.daemon.proc.wait(180) == EXIT_CONFIG
    line.daemon.close()
    text = "".join(line.daemon.raw)
    assert "error: camera gige: the camera refused genicam.exposure_us = 1000000000.0" in text
    assert "[ExposureTimeAbs]" in text and "Traceback" not in text

"""Tests for inspector.capture.genicam through real camera processes and Aravis' real fake GigE Vision camera."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from inspector.capture.manager import CaptureManager
from inspector.capture.shared import CameraRefusedError
from inspector.config.camera import CameraConfig
from inspector.core.records import Frame
from tests.genicam import ADDRESS, SIDE_PX, FakeCamera
from tests.support import wait_until

pytestmark = pytest.mark.genicam

WAIT_S = 60.0  # spawned children import cv2, numpy and Aravis on a busy 2-core machine
TRIGGERS = 10
TRIGGER_SPACING_S = 0.1


def genicam_camera(name: str = "gige", source: str = ADDRESS, **fields: Any) -> CameraConfig:
    extra = {k: fields.pop(k) for k in list(fields) if k in CameraConfig.model_fields}
    settings = {"pixel_format": "Mono8", "frame_rate_hz": 20.0, **fields}
    return CameraConfig.model_validate(
        {"name": name, "source": source, "kind": "genicam", "genicam": settings, "queue_size": 64, **extra}
    )


@pytest.fixture
def managers() -> Iterator[list[CaptureManager]]:
    """Managers the test started, stopped at teardown (the fake camera must be free for the next test)."""
    started: list[CaptureManager] = []
    yield started
    for manager in started:
        manager.stop()


def start(managers: list[CaptureManager], camera: CameraConfig) -> CaptureManager:
    manager = CaptureManager([camera], threading.Event())
    managers.append(manager)
    manager.start()
    return manager


def collect(manager: CaptureManager, count: int) -> list[Frame]:
    frames: list[Frame] = []
    deadline = time.monotonic() + WAIT_S
    while len(frames) < count:
        assert time.monotonic() < deadline, f"{len(frames)} of {count} frames; stats {manager.stats()}"
        frames += manager.get_frames(count - len(frames), 0.2)
    return frames


def test_free_run_frames_arrive_as_bgr_with_consecutive_seq_and_the_cameras_frame_id_and_timestamp(
    fake_camera: FakeCamera, managers: list[CaptureManager]
) -> None:
    before = time.time()
    manager = start(managers, genicam_camera())
    frames = collect(manager, 10)
    assert [f.seq for f in frames] == list(range(10))
    assert all(f.image.shape == (SIDE_PX, SIDE_PX, 3) and f.image.dtype == np.uint8 for f in frames)
    assert all(f.fault is None and f.trigger_seq is None for f in frames)
    ids = [int(f.frame_id or -1) for f in frames]
    assert ids == list(range(ids[0], ids[0] + 10)), "the camera's block ids, one per frame"
    stamps = [f.camera_timestamp_ns or 0 for f in frames]
    assert all(b > a > 0 for a, b in itertools.pairwise(stamps))
    assert before <= frames[0].captured_at <= frames[-1].captured_at <= time.time()
    st = manager.stats()["gige"]
    assert st.up and st.incomplete == 0 and st.reconnects == 0


@pytest.mark.parametrize("pixel_format", ["BayerRG8", "RGB8"])
def test_bayer_and_rgb_cameras_give_colour_frames_of_the_sensors_size(
    fake_camera: FakeCamera, managers: list[CaptureManager], pixel_format: str
) -> None:
    manager = start(managers, genicam_camera(pixel_format=pixel_format))
    frame = collect(manager, 1)[0]
    assert frame.fault is None and frame.image.shape == (SIDE_PX, SIDE_PX, 3)
    assert float(frame.image.std()) > 0.0, "a picture, not a blank buffer"


def test_each_software_trigger_is_answered_by_its_own_frame_in_order(
    fake_camera: FakeCamera, managers: list[CaptureManager]
) -> None:
    camera = genicam_camera(trigger="external", trigger_source="software")
    manager = start(managers, camera)
    wait_until(lambda: manager.stats()["gige"].up, "the camera up", WAIT_S)
    time.sleep(1.0)  # no trigger, no frame: a stream that is idle between parts delivers nothing
    assert manager.get_frames(8, 0.0) == []
    for seq in range(TRIGGERS):
        assert manager.fire_trigger("gige", seq, time.time())
        time.sleep(TRIGGER_SPACING_S)
    frames = collect(manager, TRIGGERS)
    assert [f.trigger_seq for f in frames] == list(range(TRIGGERS))
    assert all(f.fault is None and f.image.shape == (SIDE_PX, SIDE_PX, 3) for f in frames)
    assert len({f.frame_id for f in frames}) == TRIGGERS


def test_a_line_triggered_camera_waiting_for_its_photo_eye_stays_up_and_captures_nothing(
    fake_camera: FakeCamera, managers: list[CaptureManager]
) -> None:
    camera = genicam_camera(read_timeout_s=0.5, trigger_source="line0", trigger_activation="rising_edge")
    manager = start(managers, camera)
    wait_until(lambda: manager.stats()["gige"].up, "the camera up", WAIT_S)
    time.sleep(2.0)  # four read timeouts: each idle spell is a probe of the camera, not a failure
    st = manager.stats()["gige"]
    assert st.up and st.captured == 0 and st.reconnects == 0 and st.last_error == ""


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"exposure_us": 1e9}, "genicam.exposure_us = 1000000000.0: [ExposureTimeAbs]"),
        (
            {"trigger_source": "line5"},
            "genicam.trigger_source = 'line5': TriggerSource offers Line0, Software",
        ),
        ({"pixel_format": "Mono12"}, "genicam.pixel_format = 'Mono12': PixelFormat offers"),
    ],
    ids=["out_of_range", "no_such_entry", "format_not_offered"],
)
def test_a_value_the_camera_refuses_stops_the_start_naming_camera_field_and_feature(
    fake_camera: FakeCamera, fields: dict[str, Any], named: str
) -> None:
    manager = CaptureManager([genicam_camera("refusing", **fields)], threading.Event())
    with pytest.raises(CameraRefusedError) as refused:
        manager.start()
    assert str(refused.value).startswith("camera refusing: the camera refused ")
    assert named in str(refused.value)
    assert manager.pid("refusing") is None, "the camera process is stopped again"


def test_an_unreachable_camera_is_retried_with_backoff_not_refused(managers: list[CaptureManager]) -> None:
    camera = genicam_camera("away", source="127.0.0.9", retry_initial_s=0.1, retry_max_s=0.2)
    manager = start(managers, camera)  # no exception: nothing answered, so nothing refused
    wait_until(lambda: manager.stats()["away"].reconnects >= 2, "two more attempts", WAIT_S)
    st = manager.stats()["away"]
    assert not st.up and st.state == "down" and "no GenICam camera answers at '127.0.0.9'" in st.last_error


def test_a_camera_killed_and_restarted_is_reopened_and_seq_continues(
    fake_camera: FakeCamera, managers: list[CaptureManager]
) -> None:
    camera = genicam_camera(read_timeout_s=1.0, retry_initial_s=0.2, retry_max_s=1.0)
    manager = start(managers, camera)
    first = collect(manager, 5)
    fake_camera.kill()
    wait_until(lambda: manager.stats()["gige"].last_error != "", "the camera's silence noticed", WAIT_S)
    assert not manager.stats()["gige"].up
    assert "no frame within read_timeout_s=1" in manager.stats()["gige"].last_error
    manager.get_frames(64, 0.0)
    fake_camera.start()
    wait_until(lambda: manager.stats()["gige"].up, "the camera up again", WAIT_S)
    again = collect(manager, 5)
    seqs = [f.seq for f in first + again]
    assert seqs == sorted(set(seqs)) and manager.stats()["gige"].reconnects >= 1


def test_frames_that_lose_packets_are_faults_never_images_and_are_counted(
    fake_camera: FakeCamera, managers: list[CaptureManager]
) -> None:
    fake_camera.restart("-r", "500")  # half of all stream packets lost, resends too
    try:
        manager = start(managers, genicam_camera(frame_rate_hz=10.0))
        frames: list[Frame] = []

        def two_incomplete() -> bool:
            frames.extend(manager.get_frames(64, 0.2))
            return manager.stats()["gige"].incomplete >= 2

        wait_until(two_incomplete, "incomplete frames", WAIT_S * 2)
        manager.stop()
        while batch := manager.get_frames(64, 0.0):
            frames += batch
        st = manager.stats()["gige"]
        assert st.lost_packets > 0
        faults = [f for f in frames if f.fault is not None]
        assert len(faults) == st.incomplete >= 2
        assert all("incomplete frame" in (f.fault or "") and f.image.size == 0 for f in faults)
        assert all(f.image.shape == (SIDE_PX, SIDE_PX, 3) for f in frames if f.fault is None)
    finally:
        fake_camera.restart()

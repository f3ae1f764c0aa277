"""Tests for inspector.daemon.parts: triggers pick frames, time out into faults, keep their order, stamp products."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from inspector.config.camera import CameraConfig
from inspector.config.products import ProductConfig
from inspector.config.root import InspectorConfig
from inspector.config.triggers import TriggersConfig
from inspector.core.records import Frame
from inspector.daemon.parts import (
    MAX_PENDING_TRIGGERS,
    NOT_FIRED_FAULT,
    REJECT_BACKLOG,
    REJECT_FREE_RUNNING,
    REJECT_MALFORMED,
    REJECT_STOPPING,
    REJECT_UNKNOWN_CAMERA,
    STOPPING_FAULT,
    PartSource,
    TriggerRejected,
)
from inspector.daemon.products import ProductRegistry
from inspector.ops.metrics import InspectorMetrics
from tests.support import SyntheticGallery, load_registry

DELAY_MS = 50.0
TIMEOUT_MS = 500.0
IMAGE = np.zeros((4, 4, 3), np.uint8)


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class FakeCapture:
    """Frames queued by the test, handed out like CaptureManager.get_frames (oldest first)."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.seq = 0

    def film(self, camera: str, at: float, **fields: Any) -> None:
        self.frames.append(Frame(camera, self.seq, at, at, IMAGE, **fields))
        self.seq += 1

    def get_frames(self, max_items: int, timeout_s: float) -> list[Frame]:
        out, self.frames = self.frames[:max_items], self.frames[max_items:]
        return out


class Firer:
    """Records the software triggers a PartSource fires; ``up`` False: the camera process cannot take them."""

    def __init__(self) -> None:
        self.fired: list[tuple[str, int, float]] = []
        self.up = True

    def __call__(self, camera: str, seq: int, at: float) -> bool:
        if self.up:
            self.fired.append((camera, seq, at))
        return self.up


@pytest.fixture(scope="module")
def products(synthetic_gallery: SyntheticGallery) -> ProductRegistry:
    config = InspectorConfig(
        products=[
            ProductConfig(name="a", gallery=synthetic_gallery.path),
            ProductConfig(name="b", gallery=synthetic_gallery.path),
        ],
        cameras=[
            CameraConfig(name="ext", source="0", product="a"),
            CameraConfig(name="free", source="1", product="a"),
            CameraConfig(name="sw", source="1", product="a"),
            CameraConfig(name="hw", source="1", product="a"),
        ],
    )
    return load_registry(config)


@pytest.fixture
def setup(products: ProductRegistry) -> tuple[PartSource, FakeCapture, Clock, CollectorRegistry]:
    products.set_active("ext", "a")
    products.set_active("free", "a")
    cameras = [
        CameraConfig(
            name="ext",
            source="0",
            product="a",
            trigger="external",
            trigger_delay_ms=DELAY_MS,
            trigger_timeout_ms=TIMEOUT_MS,
        ),
        CameraConfig(name="free", source="1", product="a"),
    ]
    capture, clock, registry = FakeCapture(), Clock(), CollectorRegistry()
    metrics = InspectorMetrics(registry, include_process_collector=False)
    source = PartSource(capture, cameras, products, metrics, wall_clock=clock, monotonic=clock)
    return source, capture, clock, registry


def test_a_trigger_picks_the_first_frame_captured_at_or_after_its_time_plus_the_delay(
    setup: tuple[PartSource, FakeCapture, Clock, CollectorRegistry],
) -> None:
    source, capture, clock, _ = setup
    t = clock.now
    ack = source.submit("ext", "A-1", at=t)
    capture.film("ext", t + 0.040)  # before the pick time (t + 50 ms): not this part
    capture.film("ext", t + 0.060)
    capture.film("ext", t + 0.080)
    clock.now = t + 0.1
    (part,) = source.get_frames(8, 0.0)
    assert (part.camera, part.seq, part.part_id, part.product, part.fault) == (
        "ext",
        ack.seq,
        "A-1",
        "a",
        None,
    )
    assert part.captured_at == pytest.approx(t + 0.060)
    assert source.get_frames(8, 0.0) == []  # unpicked frames are not parts


def test_triggers_take_consecutive_seqs_and_are_answered_in_arrival_order(
    setup: tuple[PartSource, FakeCapture, Clock, CollectorRegistry],
) -> None:
    source, capture, clock, _ = setup
    t = clock.now
    acks = [source.submit("ext", f"P{i}", at=t + i * 0.01) for i in range(5)]
    assert [a.seq for a in acks] == [0, 1, 2, 3, 4]
    capture.film("ext", t + 1.0)
    clock.now = t + 1.0
    parts = source.get_frames(3, 0.0)  # room for three: the other two wait for the next call
    parts += source.get_frames(8, 0.0)
    assert [(p.seq, p.part_id) for p in parts] == [(i, f"P{i}") for i in range(5)]


def test_a_trigger_no_frame_answers_in_time_becomes_a_fault_with_its_part_id(
    setup: tuple[PartSource, FakeCapture, Clock, CollectorRegistry],
) -> None:
    source, capture, clock, registry = setup
    t = clock.now
    source.submit("ext", "LATE-1", at=t)
    clock.now = t + (DELAY_MS + TIMEOUT_MS) / 1000 - 0.01
    assert source.get_frames(8, 0.0) == []  # still within the timeout
    clock.now = t + (DELAY_MS + TIMEOUT_MS) / 1000 + 0.01
    (part,) = source.get_frames(8, 0.0)
    assert part.part_id == "LATE-1" and part.fault is not None and "trigger_timeout_ms=500" in part.fault
    assert registry.get_sample_value("inspector_trigger_timeouts_total", {"camera": "ext"}) == 1
    capture.film("ext", clock.now)
    assert source.get_frames(8, 0.0) == []  # the late frame answers nothing


@pytest.mark.parametrize(
    ("camera", "part_id", "reason"),
    [
        ("nowhere", "X", REJECT_UNKNOWN_CAMERA),
        ("free", "X", REJECT_FREE_RUNNING),
        ("ext", "", REJECT_MALFORMED),
    ],
)
def test_a_trigger_without_a_sequence_to_join_is_rejected_and_counted(
    setup: tuple[PartSource, FakeCapture, Clock, CollectorRegistry], camera: str, part_id: str, reason: str
) -> None:
    source, _, _, registry = setup
    with pytest.raises(TriggerRejected) as info:
        source.submit(camera, part_id)
    assert info.value.reason == reason
    assert registry.get_sample_value("inspector_triggers_rejected_total", {"reason": reason}) == 1


def test_a_trigger_with_a_product_switches_the_camera_and_an_unknown_one_is_an_error_part(
    setup: tuple[PartSource, FakeCapture, Clock, CollectorRegistry], products: ProductRegistry
) -> None:
    source, capture, clock, _ = setup
    t = clock.now
    switched = source.submit("ext", "B-1", product="b", at=t)
    unknown = source.submit("ext", "B-2", product="zzz", at=t)
    assert (switched.product, switched.fault) == ("b", None) and products.active("ext") == "b"
    assert unknown.fault is not None and "unknown product 'zzz'" in unknown.fault
    capture.film("ext", t + 0.1)
    clock.now = t + 0.1
    first, second = source.get_frames(8, 0.0)
    assert (first.product, first.fault) == ("b", None)
    assert (second.part_id, second.fault) == ("B-2", unknown.fault)


def test_free_running_frames_carry_the_product_active_when_they_arrive(
    setup: tuple[PartSource, FakeCapture, Clock, CollectorRegistry], products: ProductRegistry
) -> None:
    source, capture, clock, _ = setup
    capture.film("free", clock.now)
    (before,) = source.get_frames(8, 0.0)
    products.set_active("free", "b")
    capture.film("free", clock.now)
    (after,) = source.get_frames(8, 0.0)
    assert (before.product, after.product) == ("a", "b") and (before.seq, after.seq) == (0, 1)


def test_closing_answers_every_waiting_trigger_and_refuses_new_ones(
    setup: tuple[PartSource, FakeCapture, Clock, CollectorRegistry],
) -> None:
    source, _, clock, _ = setup
    source.submit("ext", "W-1", at=clock.now + 1.5)  # in the future, within the window: would wait
    source.close()
    with pytest.raises(TriggerRejected) as info:
        source.submit("ext", "W-2")
    assert info.value.reason == REJECT_STOPPING
    (part,) = source.get_frames(8, 0.0)
    assert (part.part_id, part.fault) == ("W-1", STOPPING_FAULT)


@pytest.mark.parametrize(
    ("offset_s", "words"),
    [(10_000_000.0, "in the future"), (3.0, "in the future"), (-11.0, "in the past"), (-1e9, "in the past")],
)
def test_a_trigger_whose_at_is_outside_the_window_is_an_error_part_at_once_and_holds_back_no_other(
    setup: tuple[PartSource, FakeCapture, Clock, CollectorRegistry], offset_s: float, words: str
) -> None:
    source, capture, clock, _ = setup
    window = TriggersConfig()
    t = clock.now
    bad = source.submit("ext", "FAR-1", at=t + offset_s)
    good = source.submit("ext", "NEAR-1", at=t)
    assert bad.fault is not None and words in bad.fault
    assert ("max_at_future_ms" if offset_s > 0 else "max_at_past_ms") in bad.fault
    capture.film("ext", t + 0.1)
    clock.now = t + 0.1
    first, second = source.get_frames(8, 0.0)  # the faulty one does not wait: both answered now
    assert (first.part_id, first.fault, first.captured_at) == ("FAR-1", bad.fault, t)
    assert (second.part_id, second.seq, second.fault) == ("NEAR-1", good.seq, None)
    inside = source.submit("ext", "EDGE-1", at=t + window.max_at_future_ms / 1000)
    assert inside.fault is None


@pytest.mark.parametrize("part_id", ["P-\ud800", "P\x00", "P\n1", "A\x1dGS1", "x" * 129, ""])
def test_a_part_id_that_breaks_the_rule_is_rejected_as_malformed_quoting_it_bounded(
    setup: tuple[PartSource, FakeCapture, Clock, CollectorRegistry], part_id: str
) -> None:
    source, _, _, registry = setup
    with pytest.raises(TriggerRejected) as info:
        source.submit("ext", part_id)
    assert info.value.reason == REJECT_MALFORMED and "printable characters" in str(info.value)
    assert len(str(info.value)) < 300
    str(info.value).encode("utf-8")  # the message itself is always encodable
    assert registry.get_sample_value("inspector_triggers_rejected_total", {"reason": REJECT_MALFORMED}) == 1


def test_a_part_id_already_waiting_is_accepted_as_a_duplicate_and_counted(
    setup: tuple[PartSource, FakeCapture, Clock, CollectorRegistry],
) -> None:
    source, capture, clock, registry = setup
    t = clock.now
    first = source.submit("ext", "D-1", at=t)
    second = source.submit("ext", "D-1", at=t)
    assert (first.duplicate, second.duplicate) == (False, True) and second.seq == first.seq + 1
    assert registry.get_sample_value("inspector_triggers_duplicate_total", {"camera": "ext"}) == 1
    capture.film("ext", t + 0.1)
    clock.now = t + 0.1
    assert len(source.get_frames(8, 0.0)) == 2
    assert source.submit("ext", "D-1", at=clock.now).duplicate is False  # answered: no longer waiting


def test_an_unknown_camera_name_is_quoted_bounded_in_the_rejection(
    setup: tuple[PartSource, FakeCapture, Clock, CollectorRegistry],
) -> None:
    source, _, _, _ = setup
    with pytest.raises(TriggerRejected) as info:
        source.submit("c" * 65_000, "X-1")
    assert info.value.reason == REJECT_UNKNOWN_CAMERA and len(str(info.value)) < 300


def test_a_trigger_beyond_the_backlog_is_refused_without_a_seq_and_counted(
    setup: tuple[PartSource, FakeCapture, Clock, CollectorRegistry],
) -> None:
    source, _, clock, registry = setup
    for i in range(MAX_PENDING_TRIGGERS):
        source.submit("ext", f"B-{i}", at=clock.now + 1.0)  # waiting: no frame yet
    with pytest.raises(TriggerRejected) as info:
        source.submit("ext", "B-over", at=clock.now + 1.0)
    assert info.value.reason == REJECT_BACKLOG and "1024 triggers already wait" in str(info.value)
    assert registry.get_sample_value("inspector_triggers_rejected_total", {"reason": REJECT_BACKLOG}) == 1
    clock.now += 1.0 + (DELAY_MS + TIMEOUT_MS) / 1000 + 0.01
    assert len(source.get_frames(2 * MAX_PENDING_TRIGGERS, 0.0)) == MAX_PENDING_TRIGGERS  # all timed out
    assert source.submit("ext", "B-next").seq == MAX_PENDING_TRIGGERS  # the refused one took no seq


WINDOW_MS = 100.0
GenicamSetup = tuple[PartSource, FakeCapture, Clock, CollectorRegistry, Firer]


@pytest.fixture
def genicam(products: ProductRegistry) -> GenicamSetup:
    """A software-triggered (sw) and a line-triggered (hw) GenICam camera, both external."""
    for name in ("sw", "hw"):
        products.set_active(name, "a")
    common: dict[str, Any] = {"kind": "genicam", "source": "10.0.0.2", "product": "a", "trigger": "external"}
    cameras = [
        CameraConfig(name="sw", **common, trigger_timeout_ms=TIMEOUT_MS, genicam={"trigger_source": "software"}),
        CameraConfig(
            name="hw", **common, trigger_delay_ms=DELAY_MS, trigger_timeout_ms=TIMEOUT_MS,
            genicam={"trigger_source": "line0", "pairing_window_ms": WINDOW_MS},
        ),
    ]  # fmt: skip
    capture, clock, registry, firer = FakeCapture(), Clock(), CollectorRegistry(), Firer()
    metrics = InspectorMetrics(registry, include_process_collector=False)
    source = PartSource(capture, cameras, products, metrics, wall_clock=clock, monotonic=clock, fire=firer)
    return source, capture, clock, registry, firer


def test_a_software_trigger_fires_the_camera_and_only_the_frame_it_took_answers_it(
    genicam: GenicamSetup,
) -> None:
    source, capture, clock, _, firer = genicam
    t = clock.now
    acks = [source.submit("sw", f"S{i}", at=t + i * 0.01) for i in range(3)]
    assert firer.fired == [("sw", a.seq, t + i * 0.01) for i, a in enumerate(acks)]
    capture.film("sw", t + 0.001, trigger_seq=None, frame_id="stale")  # no trigger took it
    capture.film("sw", t + 0.030, trigger_seq=1, frame_id="f1")  # arrives first, answers the second
    clock.now = t + 0.05
    assert source.get_frames(8, 0.0) == [], "the first trigger's frame is still on its way: nothing yet"
    capture.film("sw", t + 0.040, trigger_seq=0, frame_id="f0")
    capture.film("sw", t + 0.050, trigger_seq=2, fault="camera sw: incomplete frame 7 (missing-packets)")
    parts = source.get_frames(8, 0.0)
    assert [(p.seq, p.part_id, p.frame_id) for p in parts] == [
        (0, "S0", "f0"),
        (1, "S1", "f1"),
        (2, "S2", None),
    ]
    assert (
        parts[2].fault is not None and "incomplete frame" in parts[2].fault
    )  # an ERROR verdict, its part id


def test_a_software_trigger_the_camera_cannot_take_is_an_error_part_at_once(genicam: GenicamSetup) -> None:
    source, _, _, _, firer = genicam
    firer.up = False
    ack = source.submit("sw", "DOWN-1")
    assert ack.fault == NOT_FIRED_FAULT
    (part,) = source.get_frames(8, 0.0)
    assert (part.part_id, part.fault) == ("DOWN-1", NOT_FIRED_FAULT)


def test_line_triggered_frames_pair_in_order_inside_the_window_and_a_gap_on_either_side_is_an_error_not_a_shift(
    genicam: GenicamSetup,
) -> None:
    source, capture, clock, registry, _ = genicam
    t = clock.now
    delay = DELAY_MS / 1000
    for i in range(4):  # parts every second; the photo-eye's time is "at", frames come a little after it
        clock.now = t + i  # each trigger sent as its part passes (an "at" seconds ahead is refused)
        source.submit("hw", f"H{i}", at=t + i)
    capture.film("hw", t + delay + 0.010, frame_id="h0")  # H0's frame
    capture.film("hw", t + 0.5, frame_id="extra")  # the photo-eye fired without a part: no trigger's
    capture.film("hw", t + 2 + delay + 0.020, frame_id="h2")  # H1's frame never came
    capture.film("hw", t + 3 + delay - 0.030, frame_id="h3")
    clock.now = t + 3.2
    parts = source.get_frames(8, 0.0)
    assert [(p.part_id, p.frame_id) for p in parts] == [
        ("H0", "h0"),
        ("H1", None),
        ("H2", "h2"),
        ("H3", "h3"),
    ]
    assert parts[1].fault is not None and "pairing_window_ms=100" in parts[1].fault
    assert registry.get_sample_value("inspector_frames_unpaired_total", {"camera": "hw"}) == 1


def test_a_line_trigger_waits_for_its_frame_until_the_timeout_and_a_frame_without_a_trigger_ages_out(
    genicam: GenicamSetup,
) -> None:
    source, capture, clock, registry, _ = genicam
    t = clock.now
    capture.film("hw", t, frame_id="early")  # the PLC never sends this part's trigger
    source.submit("hw", "W-1", at=t + 2.0)
    clock.now = t + 2.0 + (DELAY_MS + TIMEOUT_MS) / 1000 - 0.01
    assert source.get_frames(8, 0.0) == []  # the old frame is not W-1's; W-1 may still get its own
    assert registry.get_sample_value("inspector_frames_unpaired_total", {"camera": "hw"}) == 1
    capture.film("hw", t + 2.0 + DELAY_MS / 1000 + 0.05, frame_id="w1")
    (part,) = source.get_frames(8, 0.0)
    assert (part.part_id, part.frame_id, part.fault) == ("W-1", "w1", None)

"""Tests for inspector.bus.wire: verdict/heartbeat models, their per-verdict rules, multipart encoding, masks."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import numpy as np
import pytest

from inspector.bus.wire import (
    RFC3339_UTC_PATTERN,
    SCHEMA_VERSION,
    SEQ_MAX,
    U8_AT_PIXEL_THRESHOLD,
    CameraStatus,
    Heartbeat,
    MaskInfo,
    VerdictHeader,
    anomaly_map_to_u8,
    decode_heartbeat,
    decode_mask,
    decode_verdict,
    encode_heartbeat,
    encode_mask,
    encode_verdict,
    latency_s,
    new_boot_id,
    parse_rfc3339,
    rfc3339,
    u8_to_anomaly_map,
)
from inspector.core.names import LATENCY_STAGES

T0 = 1_714_564_800.25  # 2024-05-01T12:00:00.25Z
SCORED_LATENCY = {stage: 1.0 for stage in LATENCY_STAGES} | {"end_to_end": 42.0}
UNSCORED_LATENCY = {"queue": 1.0, "encode": 0.1, "end_to_end": 42.0}
UNSCORED = {
    "score": None,
    "threshold": None,
    "pixel_threshold": None,
    "defect_area_px": None,
    "defect_count": None,
}


def make_header(**overrides: Any) -> VerdictHeader:
    """A valid FAIL header; keyword overrides replace fields (validated)."""
    fields: dict[str, Any] = {
        "boot_id": "0" * 31 + "1",
        "camera": "cam1",
        "seq": 7,
        "frame_id": "f-7",
        "part_id": "P123",
        "captured_at": rfc3339(T0),
        "published_at": rfc3339(T0 + 0.042),
        "age_ms": 42.0,
        "verdict": "FAIL",
        "score": 3.5,
        "threshold": 2.0,
        "pixel_threshold": 1.5,
        "defect_area_px": 120,
        "defect_count": 1,
        "gallery": "ab" * 32,
        "latency_ms": SCORED_LATENCY,
    }
    fields.update(overrides)
    return VerdictHeader.model_validate(fields)


def make_unscored(verdict: str, **overrides: Any) -> VerdictHeader:
    """A valid TIMEOUT or ERROR header."""
    return make_header(verdict=verdict, error="why", latency_ms=UNSCORED_LATENCY, **UNSCORED, **overrides)


def make_heartbeat(**overrides: Any) -> Heartbeat:
    """A valid heartbeat with one camera."""
    fields: dict[str, Any] = {
        "boot_id": new_boot_id(),
        "published_at": rfc3339(T0),
        "state": "ready",
        "uptime_s": 12.5,
        "cameras": {"cam1": CameraStatus(state="up", up=True, frames=100, last_seq=99)},
        "frames_published": 100,
        "worker": "up",
        "worker_alive": True,
    }
    fields.update(overrides)
    return Heartbeat.model_validate(fields)


def test_rfc3339_has_microseconds_and_z_and_round_trips() -> None:
    text = rfc3339(T0)
    assert text == "2024-05-01T12:00:00.250000Z"
    assert re.fullmatch(RFC3339_UTC_PATTERN, rfc3339(time.time()))
    assert parse_rfc3339(text) == pytest.approx(T0, abs=1e-6)


def test_parse_rfc3339_rejects_other_formats_naming_the_text() -> None:
    with pytest.raises(ValueError, match="2024-05-01 12:00:00"):
        parse_rfc3339("2024-05-01 12:00:00")


def test_new_boot_id_is_random_uuid4_hex() -> None:
    a, b = new_boot_id(), new_boot_id()
    assert a != b
    assert re.fullmatch(r"[0-9a-f]{32}", a)


def test_verdict_round_trip_preserves_every_field_and_mask() -> None:
    mask = (np.arange(48 * 64, dtype=np.uint32).reshape(48, 64) % 256).astype(np.uint8)
    mask_png, info = encode_mask(mask)
    header = make_header(mask=info)
    parts = encode_verdict(header, mask_png)
    assert parts[0] == b"verdict.cam1"
    topic, decoded, mask_bytes = decode_verdict(parts)
    assert topic == "verdict.cam1"
    assert decoded == header
    restored = decode_mask(mask_bytes, decoded.mask)
    assert restored is not None
    np.testing.assert_array_equal(restored, mask)


def test_header_json_spells_schema_field_as_schema() -> None:
    raw = json.loads(encode_verdict(make_header(), b"")[1])
    assert raw["schema"] == SCHEMA_VERSION
    assert "schema_version" not in raw
    assert raw["mask"] == {"encoding": "none", "kind": "none", "width": 0, "height": 0}


def test_encode_mask_none_gives_empty_bytes_encoding_none_and_kind_none() -> None:
    data, info = encode_mask(None, kind="binary")
    assert data == b""
    assert (info.encoding, info.kind, info.width, info.height) == ("none", "none", 0, 0)
    assert decode_mask(data, info) is None


@pytest.mark.parametrize(
    "fields",
    [
        {"encoding": "none", "kind": "binary", "width": 0, "height": 0},
        {"encoding": "png", "kind": "none", "width": 4, "height": 4},
        {"encoding": "none", "kind": "none", "width": 4, "height": 4},
    ],
)
def test_mask_kind_is_none_exactly_when_encoding_is_none(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="kind"):
        MaskInfo.model_validate(fields)


def test_encode_mask_rejects_non_uint8_or_non_2d() -> None:
    with pytest.raises(ValueError, match="2-D uint8"):
        encode_mask(np.zeros((4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="2-D uint8"):
        encode_mask(np.zeros((4, 4, 3), dtype=np.uint8))


def test_decode_mask_rejects_size_mismatch() -> None:
    data, _ = encode_mask(np.zeros((8, 8), dtype=np.uint8))
    with pytest.raises(ValueError, match="expected 9x8"):
        decode_mask(data, MaskInfo(encoding="png", kind="binary", width=8, height=9))


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        ([b"verdict.cam1", b"{}"], "expected 3 message parts, got 2"),
        ([b"other.cam1", b"{}", b""], "does not start with 'verdict.'"),
        ([b"verdict.cam1", b"not json", b""], "verdict header on topic 'verdict.cam1'"),
        ([b"verdict.cam1", b"{}", "text"], "part 2 must be bytes"),
    ],
)
def test_decode_verdict_rejects_malformed_messages_clearly(parts: list[Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        decode_verdict(parts)


def test_decode_verdict_names_missing_and_invalid_fields() -> None:
    raw = json.loads(encode_verdict(make_header(), b"")[1])
    del raw["seq"]
    raw["verdict"] = "MAYBE"
    with pytest.raises(ValueError) as info:
        decode_verdict([b"verdict.cam1", json.dumps(raw).encode(), b""])
    assert "seq: Field required" in str(info.value)
    assert "verdict:" in str(info.value)


def test_decode_verdict_rejects_topic_camera_mismatch() -> None:
    parts = encode_verdict(make_header(), b"")
    with pytest.raises(ValueError, match="does not match header camera 'cam1'"):
        decode_verdict([b"verdict.cam2", parts[1], parts[2]])


def test_decode_verdict_rejects_unknown_schema_version() -> None:
    raw = json.loads(encode_verdict(make_header(), b"")[1])
    raw["schema"] = SCHEMA_VERSION + 1
    with pytest.raises(ValueError, match=f"unsupported schema version {SCHEMA_VERSION + 1}"):
        decode_verdict([b"verdict.cam1", json.dumps(raw).encode(), b""])


def test_decode_verdict_rejects_mask_bytes_contradicting_header() -> None:
    parts = encode_verdict(make_header(), b"")
    with pytest.raises(ValueError, match="mask encoding is none"):
        decode_verdict([parts[0], parts[1], b"\x89PNG\r\n\x1a\nxx"])
    png_header = make_header(mask=MaskInfo(encoding="png", kind="binary", width=4, height=4))
    with pytest.raises(ValueError, match="not a PNG"):
        decode_verdict([b"verdict.cam1", png_header.model_dump_json().encode(), b""])


def test_encode_verdict_rejects_mask_bytes_contradicting_header() -> None:
    with pytest.raises(ValueError, match="camera cam1: mask encoding is none"):
        encode_verdict(make_header(), b"\x89PNG\r\n\x1a\n")


def test_error_and_timeout_verdicts_require_a_reason_and_nothing_scored() -> None:
    with pytest.raises(ValueError, match="error must give the reason when verdict is TIMEOUT"):
        make_header(verdict="TIMEOUT", latency_ms=UNSCORED_LATENCY, **UNSCORED)
    header = make_unscored("ERROR", part_id=None)
    assert decode_verdict(encode_verdict(header, b""))[1].error == "why"
    with pytest.raises(ValueError, match="pixel_threshold must be null when verdict is ERROR"):
        make_header(
            verdict="ERROR", error="why", latency_ms=UNSCORED_LATENCY, **(UNSCORED | {"pixel_threshold": 1.0})
        )
    with pytest.raises(ValueError, match="mask encoding must be none when verdict is TIMEOUT"):
        make_unscored("TIMEOUT", mask=MaskInfo(encoding="png", kind="binary", width=4, height=4))


@pytest.mark.parametrize("verdict", ["PASS", "REVIEW", "FAIL"])
def test_scored_verdicts_require_every_scored_field_and_no_error(verdict: str) -> None:
    with pytest.raises(ValueError, match="score required"):
        make_header(verdict=verdict, score=None)
    with pytest.raises(
        ValueError, match=f"pixel_threshold, defect_area_px required when verdict is {verdict}"
    ):
        make_header(verdict=verdict, pixel_threshold=None, defect_area_px=None)
    with pytest.raises(ValueError, match="error must be null"):
        make_header(verdict=verdict, error="x")
    header = make_header(verdict=verdict, review_threshold=0.5)
    assert decode_verdict(encode_verdict(header, b""))[1].review_threshold == 0.5


@pytest.mark.parametrize(
    ("verdict", "latency", "problem"),
    [
        ("FAIL", {k: v for k, v in SCORED_LATENCY.items() if k != "backbone"}, "missing ['backbone']"),
        ("PASS", UNSCORED_LATENCY, "missing ['preprocess'"),
        ("ERROR", SCORED_LATENCY, "not allowed ['preprocess'"),
        ("TIMEOUT", {"queue": 1.0, "end_to_end": 2.0}, "missing ['encode']"),
    ],
)
def test_latency_ms_has_exactly_the_stages_of_its_kind_of_verdict(
    verdict: str, latency: dict[str, float], problem: str
) -> None:
    fields: dict[str, Any] = {"latency_ms": latency, "verdict": verdict}
    if verdict in ("ERROR", "TIMEOUT"):
        fields |= {"error": "why", **UNSCORED}
    with pytest.raises(ValueError, match=re.escape(problem)):
        make_header(**fields)


def test_latency_ms_keys_are_the_documented_stages_only() -> None:
    with pytest.raises(ValueError, match="latency_ms"):
        make_header(latency_ms={**SCORED_LATENCY, "gpu": 1.0})


def test_seq_is_a_64_bit_counter_and_the_gallery_64_lowercase_hex() -> None:
    assert make_header(seq=SEQ_MAX).seq == 2**63 - 1
    with pytest.raises(ValueError, match="seq"):
        make_header(seq=SEQ_MAX + 1)
    for bad in ("AB" * 32, "ab" * 31, "c5d5e7d40993"):
        with pytest.raises(ValueError, match="gallery"):
            make_header(gallery=bad)


def test_non_finite_scores_and_negative_latency_are_rejected() -> None:
    with pytest.raises(ValueError, match="score"):
        make_header(score=float("nan"))
    with pytest.raises(ValueError, match="latency_ms"):
        make_header(latency_ms={**SCORED_LATENCY, "queue": -1.0})


def test_bad_timestamps_camera_names_and_extra_fields_are_rejected() -> None:
    with pytest.raises(ValueError, match="captured_at"):
        make_header(captured_at="2024-05-01T12:00:00Z")
    with pytest.raises(ValueError, match="camera"):
        make_header(camera="cam 1")
    with pytest.raises(ValueError, match="unexpected"):
        make_header(unexpected=1)


def test_latency_s_is_end_to_end() -> None:
    assert latency_s(make_header()) == pytest.approx(0.042)


def test_heartbeat_round_trip() -> None:
    hb = make_heartbeat()
    parts = encode_heartbeat(hb)
    assert parts[0] == b"heartbeat"
    assert decode_heartbeat(parts) == hb


@pytest.mark.parametrize(
    ("worker", "alive"),
    [
        ("starting", False),
        ("up", True),
        ("stalled", False),
        ("down", False),
        ("stopping", True),
        ("stopped", False),
    ],
)
def test_worker_alive_is_true_exactly_when_the_worker_is_up_or_stopping(worker: str, alive: bool) -> None:
    assert make_heartbeat(worker=worker, worker_alive=alive).worker_alive is alive
    with pytest.raises(ValueError, match="worker_alive must be true exactly when"):
        make_heartbeat(worker=worker, worker_alive=not alive)


def test_a_heartbeat_built_without_worker_takes_it_from_worker_alive() -> None:
    fields = make_heartbeat().model_dump(by_alias=True)
    del fields["worker"]
    assert Heartbeat.model_validate(fields).worker == "up"
    assert Heartbeat.model_validate({**fields, "worker_alive": False}).worker == "stalled"


def test_decode_heartbeat_rejects_wrong_topic_and_bad_state() -> None:
    parts = encode_heartbeat(make_heartbeat())
    with pytest.raises(ValueError, match="is not 'heartbeat'"):
        decode_heartbeat([b"verdict.cam1", parts[1]])
    raw = json.loads(parts[1])
    raw["state"] = "sleeping"
    with pytest.raises(ValueError, match="heartbeat header: state"):
        decode_heartbeat([b"heartbeat", json.dumps(raw).encode()])
    with pytest.raises(ValueError, match="expected 2 message parts, got 1"):
        decode_heartbeat([parts[1]])


def test_anomaly_map_to_u8_puts_the_first_value_above_the_pixel_threshold_at_128() -> None:
    thr = float(np.float32(3.7))  # a threshold as the engine stores it (from a float32 map)
    above = np.nextafter(np.float32(thr), np.float32(np.inf))
    u8 = anomaly_map_to_u8(np.array([thr, above], np.float32), thr)
    assert u8.tolist() == [U8_AT_PIXEL_THRESHOLD - 1, U8_AT_PIXEL_THRESHOLD]  # equal to it is not a defect


def test_anomaly_map_to_u8_is_0_at_zero_255_from_twice_the_threshold_and_monotone() -> None:
    thr = float(np.float32(3.7))  # a threshold as the engine stores it (from a float32 map)
    amap = np.linspace(-1.0, 3 * thr, 1001, dtype=np.float32)
    u8 = anomaly_map_to_u8(amap, thr)
    assert u8.dtype == np.uint8 and u8.shape == amap.shape
    assert np.all(u8[amap <= 0] == 0) and np.all(u8[amap >= 2 * thr] == 255)
    assert np.all(np.diff(u8.astype(int)) >= 0)


def test_anomaly_map_to_u8_at_least_128_exactly_where_the_map_is_above_the_pixel_threshold() -> None:
    """A bus consumer that rebuilds the mask as u8 >= 128 must get the engine's mask (amap > threshold)."""
    thr = float(np.float32(3.7))  # a threshold as the engine stores it (from a float32 map)
    amap = (thr * (1.0 + np.linspace(-0.003, 0.003, 61))).astype(np.float32)
    amap = np.concatenate([amap, np.array([thr], np.float32)])  # the tie too: not a defect pixel
    assert np.array_equal(anomaly_map_to_u8(amap, thr) >= U8_AT_PIXEL_THRESHOLD, amap > thr)


def test_u8_back_to_the_map_gives_an_interval_that_holds_the_original_value() -> None:
    """A subscriber going back from anomaly_map_u8 to scores: each pixel's [low, high] holds the map value."""
    thr = float(np.float32(3.7))
    amap = np.linspace(0.0, 2.2 * thr, 4001, dtype=np.float32)
    low, high = u8_to_anomaly_map(anomaly_map_to_u8(amap, thr), thr)
    slack = 1e-6 * thr  # floor() of a float64 product: the interval's edges hold up to rounding
    assert np.all(low - slack <= amap) and np.all(amap <= high + slack)
    below = amap < 255 * thr / U8_AT_PIXEL_THRESHOLD
    assert np.all(high[below] - low[below] <= thr / U8_AT_PIXEL_THRESHOLD + slack)  # one step of t / 128
    assert np.all(np.isinf(high[~below]))  # saturated: at least 255 t / 128

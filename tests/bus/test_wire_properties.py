"""Property tests of inspector.bus.wire: encode/decode round trips, and arbitrary bytes fail only cleanly."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inspector.bus.wire import (
    ALWAYS_STAGES,
    Heartbeat,
    VerdictHeader,
    decode_heartbeat,
    decode_verdict,
    encode_heartbeat,
    encode_verdict,
    new_boot_id,
    rfc3339,
)
from inspector.core.names import LATENCY_STAGES

EXAMPLES = 200
names = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_-]{0,20}\Z")
times = st.floats(min_value=0.0, max_value=4_000_000_000.0, allow_nan=False)
finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
text = st.text(min_size=1, max_size=40)


@st.composite
def headers(draw: st.DrawFn) -> VerdictHeader:
    verdict = draw(st.sampled_from(["PASS", "FAIL", "TIMEOUT", "ERROR"]))
    scored = verdict in ("PASS", "FAIL")
    fields: dict[str, Any] = {
        "boot_id": new_boot_id(),
        "camera": draw(names),
        "seq": draw(st.integers(0, 2**62)),
        "part_id": draw(st.none() | text),
        "captured_at": rfc3339(draw(times)),
        "published_at": rfc3339(draw(times)),
        "age_ms": draw(st.floats(0.0, 1e9)),
        "verdict": verdict,
        "score": draw(finite) if scored else None,
        "threshold": draw(finite) if scored else None,
        "pixel_threshold": draw(finite) if scored else None,
        "defect_area_px": draw(st.integers(0, 10**7)) if scored else None,
        "defect_count": draw(st.integers(0, 10**4)) if scored else None,
        "product": draw(st.none() | text),
        "gallery": draw(st.none() | st.from_regex(r"\A[0-9a-f]{64}\Z")),
        "latency_ms": {
            stage: draw(st.floats(0, 1e6)) for stage in (LATENCY_STAGES if scored else ALWAYS_STAGES)
        },
        "error": None if scored else draw(text),
    }
    return VerdictHeader.model_validate(fields)


@settings(max_examples=EXAMPLES, suppress_health_check=[HealthCheck.too_slow])
@given(headers())
def test_a_verdict_header_survives_encode_and_decode_unchanged(header: VerdictHeader) -> None:
    topic, decoded, mask = decode_verdict(encode_verdict(header, b""))
    assert decoded == header and mask == b"" and topic == f"verdict.{header.camera}"


@settings(max_examples=EXAMPLES)
@given(
    st.sampled_from(["starting", "ready", "degraded", "stopping", "stopped", "failed"]),
    st.sampled_from(["starting", "up", "stalled", "down", "stopping", "stopped"]),
    st.floats(0, 1e9),
    st.integers(0, 2**40),
)
def test_a_heartbeat_survives_encode_and_decode_unchanged(
    state: str, worker: str, uptime: float, published: int
) -> None:
    hb = Heartbeat.model_validate({
        "boot_id": new_boot_id(), "published_at": rfc3339(0.0), "state": state, "uptime_s": uptime,
        "frames_published": published, "worker": worker, "worker_alive": worker in ("up", "stopping"),
    })  # fmt: skip
    assert decode_heartbeat(encode_heartbeat(hb)) == hb


parts = st.lists(st.binary(max_size=300), min_size=0, max_size=4)


@settings(max_examples=EXAMPLES * 2)
@given(parts)
def test_decoding_arbitrary_bytes_raises_only_value_error(message: list[bytes]) -> None:
    for decode in (decode_verdict, decode_heartbeat):
        try:
            decode(message)
        except ValueError:
            pass


@settings(max_examples=EXAMPLES)
@given(st.dictionaries(st.text(max_size=12), st.none() | st.integers() | st.text(max_size=20) | st.floats()))
def test_decoding_arbitrary_json_objects_under_a_verdict_topic_raises_only_value_error(
    obj: dict[str, object],
) -> None:
    import json

    for topic in (b"verdict.cam1", b"heartbeat"):
        try:
            decode_verdict([topic, json.dumps(obj).encode(), b""])
        except ValueError:
            pass
        try:
            decode_heartbeat([topic, json.dumps(obj).encode()])
        except ValueError:
            pass

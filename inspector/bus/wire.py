"""Wire format of the verdict bus: pydantic message models, multipart encode/decode and JSON Schema export.

Every inspected frame produces one ZeroMQ multipart message ``[topic, header, mask]``:

* ``topic``: ``verdict.<camera>`` (ASCII). ZeroMQ subscriptions are byte prefixes, so subscribing to
  ``verdict.cam1`` also matches ``verdict.cam10``; subscribers that need one camera exactly compare
  ``header.camera``.
* ``header``: UTF-8 JSON of :class:`VerdictHeader`.
* ``mask``: a PNG-encoded 8-bit single-channel image, or empty bytes when ``header.mask.encoding == "none"``.

The daemon also publishes ``[b"heartbeat", header]`` with a :class:`Heartbeat` JSON header about once a second.
Run ``python -m inspector.bus.wire docs`` to regenerate ``docs/verdict.schema.json`` and ``docs/heartbeat.schema.json``.
"""

from __future__ import annotations

import json
import math
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from inspector.core.errors import validation_lines
from inspector.core.names import CAMERA_NAME_PATTERN, LATENCY_STAGES, SCORED_VERDICTS, CameraState, Verdict

SCHEMA_VERSION = 5  # 2: product, camera state; 3: verdict age_ms, camera state starting; 4: REVIEW verdict;
# 5: defect regions (defect_count, defects)
VERDICT_TOPIC_PREFIX = "verdict."
HEARTBEAT_TOPIC = "heartbeat"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_COMPRESSION_LEVEL = 1  # 0..9; 1 trades a little size for much less CPU per frame
U8_AT_PIXEL_THRESHOLD = 128.0  # anomaly_map_u8: the 8-bit value of the gallery's pixel threshold
U8_MAX = 255
BOOT_ID_PATTERN = r"^[0-9a-f]{32}$"
RFC3339_UTC_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$"
RFC3339_UTC_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
VERDICT_SCHEMA_FILE = "verdict.schema.json"
HEARTBEAT_SCHEMA_FILE = "heartbeat.schema.json"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

MaskEncoding = Literal["png", "none"]
MaskKind = Literal["anomaly_map_u8", "binary"]
DaemonState = Literal["starting", "ready", "degraded", "stopping"]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
LatencyMs = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
CameraName = Annotated[str, Field(pattern=CAMERA_NAME_PATTERN, description="Camera name from the config.")]
BootId = Annotated[
    str, Field(pattern=BOOT_ID_PATTERN, description="Random uuid4 hex chosen at each daemon start.")
]
Timestamp = Annotated[
    str, Field(pattern=RFC3339_UTC_PATTERN, description="RFC 3339 UTC time with microseconds and 'Z'.")
]


class _WireModel(BaseModel):
    """Base of wire models: unknown fields rejected, immutable, ``schema`` field spelled by its alias."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        json_schema_serialization_defaults_required=True,  # every field is always sent: all required
    )


class MaskInfo(_WireModel):
    """How the third message part (the mask) is encoded."""

    encoding: MaskEncoding = Field(description="png: 8-bit single-channel PNG; none: the mask part is empty.")
    kind: MaskKind = Field(
        description="anomaly_map_u8: anomaly map scaled to 0..255; binary: 0 = normal, 255 = defect."
    )
    width: int = Field(ge=0, description="Mask width in pixels (0 when encoding is none).")
    height: int = Field(ge=0, description="Mask height in pixels (0 when encoding is none).")

    @model_validator(mode="after")
    def _size_matches_encoding(self) -> MaskInfo:
        has_size = self.width > 0 and self.height > 0
        if self.encoding == "png" and not has_size:
            raise ValueError("mask width and height must be positive when encoding is png")
        if self.encoding == "none" and (self.width or self.height):
            raise ValueError("mask width and height must be 0 when encoding is none")
        return self


NO_MASK_ANOMALY_MAP = MaskInfo(encoding="none", kind="anomaly_map_u8", width=0, height=0)
MAX_DEFECTS = 16  # defect regions a header lists, largest first (defect_count counts them all)


class DefectInfo(_WireModel):
    """One connected region of the defect mask, in frame pixels (schema 5)."""

    area_px: int = Field(ge=0, description="Frame pixels the region covers.")
    peak: FiniteFloat = Field(description="The anomaly map's highest value in the region.")
    box: tuple[int, int, int, int] = Field(
        description="Bounding box [x0, y0, x1, y1] in frame pixels (x1, y1 exclusive)."
    )


class VerdictHeader(_WireModel):
    """Header (second part) of a ``verdict.<camera>`` message: one per inspected frame."""

    schema_version: int = Field(
        default=SCHEMA_VERSION,
        alias="schema",
        ge=1,
        description=f"Wire schema version; this build writes {SCHEMA_VERSION}.",
        json_schema_extra={"const": SCHEMA_VERSION},
    )
    boot_id: BootId
    camera: CameraName
    seq: int = Field(ge=0, description="Per-camera sequence number, +1 per frame; restarts with boot_id.")
    frame_id: str | None = Field(
        default=None, description="Camera frame identifier, if the source provides one."
    )
    part_id: str | None = Field(default=None, description="Part identifier (e.g. from a trigger or barcode).")
    captured_at: Timestamp
    published_at: Timestamp
    age_ms: LatencyMs = Field(
        description="How old the verdict was when sent: milliseconds from capture to publish (monotonic "
        "clock). Add the time since published_at to get its age on arrival; older than the line's budget: reject."
    )
    verdict: Verdict
    score: FiniteFloat | None = Field(
        default=None, description="Image anomaly score; required for PASS/FAIL."
    )
    threshold: FiniteFloat | None = Field(
        default=None, description="Image threshold; FAIL when score > threshold."
    )
    review_threshold: FiniteFloat | None = Field(
        default=None,
        description="Review threshold of a gallery with a review band (null without one): REVIEW when "
        "review_threshold < score <= threshold.",
    )
    defect_area_px: int | None = Field(
        default=None, ge=0, description="Mask pixels above the pixel threshold."
    )
    defect_count: int | None = Field(
        default=None,
        ge=0,
        description="Connected regions of the defect mask (schema 5); null for TIMEOUT/ERROR.",
    )
    defects: list[DefectInfo] = Field(
        default_factory=list,
        max_length=MAX_DEFECTS,
        description=f"The largest {MAX_DEFECTS} defect regions, largest first (schema 5; empty when none).",
    )
    product: str | None = Field(
        default=None,
        description="The product (recipe) the frame was inspected as; its gallery is ``gallery``.",
    )
    gallery: str | None = Field(
        default=None,
        description="Gallery hash (SHA-256 over its tensors and whole manifest) of the gallery that scored the "
        "frame; `inspector gallery info` prints it as gallery_sha256.",
    )
    latency_ms: dict[str, LatencyMs] = Field(
        default_factory=dict,
        description="Milliseconds per stage: "
        + ", ".join(LATENCY_STAGES)
        + " (end_to_end: capture to publish).",
    )
    mask: MaskInfo = NO_MASK_ANOMALY_MAP
    error: str | None = Field(
        default=None, description="Reason, required for ERROR and TIMEOUT, absent otherwise."
    )

    @model_validator(mode="after")
    def _verdict_fields_consistent(self) -> VerdictHeader:
        if self.verdict in ("ERROR", "TIMEOUT"):
            if not self.error:
                raise ValueError(f"error must give the reason when verdict is {self.verdict}")
        else:
            if self.error is not None:
                raise ValueError(f"error must be null when verdict is {self.verdict}")
            if self.score is None or self.threshold is None:
                raise ValueError(f"score and threshold are required when verdict is {self.verdict}")
        return self


class CameraStatus(_WireModel):
    """One camera's state inside a heartbeat."""

    state: CameraState = Field(
        description="starting: opening its source for the first time (not a fault); up: delivering frames; "
        "down: not delivering (reconnecting after a failure); paused: stopped by the control socket (not a "
        "fault); ended: a file or folder source finished."
    )
    up: bool = Field(description="The camera is connected and delivering frames.")
    frames: int = Field(ge=0, description="Frames captured since the daemon started.")
    last_seq: int | None = Field(default=None, ge=0, description="seq of the last verdict published, if any.")


class Heartbeat(_WireModel):
    """Header of a ``heartbeat`` message: daemon liveness, published periodically."""

    schema_version: int = Field(
        default=SCHEMA_VERSION,
        alias="schema",
        ge=1,
        description=f"Wire schema version; this build writes {SCHEMA_VERSION}.",
        json_schema_extra={"const": SCHEMA_VERSION},
    )
    boot_id: BootId
    published_at: Timestamp
    state: DaemonState
    uptime_s: float = Field(ge=0.0, allow_inf_nan=False, description="Seconds since the daemon started.")
    cameras: dict[str, CameraStatus] = Field(default_factory=dict, description="Camera name -> status.")
    frames_published: int = Field(ge=0, description="Verdict messages published since start.")
    worker_alive: bool = Field(description="The model worker process is alive and making progress.")


def new_boot_id() -> str:
    """Return a fresh random boot id (uuid4 hex), chosen once per daemon start."""
    return uuid.uuid4().hex


def rfc3339(ts: float) -> str:
    """Format a Unix timestamp as RFC 3339 UTC with microseconds, e.g. ``2024-05-01T12:00:00.000123Z``.

    Args:
        ts: seconds since the Unix epoch.

    Returns:
        The timestamp string used in every wire time field.
    """
    return datetime.fromtimestamp(ts, tz=UTC).strftime(RFC3339_UTC_FORMAT)


def parse_rfc3339(text: str) -> float:
    """Inverse of :func:`rfc3339`: return the Unix timestamp of a wire time string.

    Raises:
        ValueError: the text is not in the wire format.
    """
    try:
        return datetime.strptime(text, RFC3339_UTC_FORMAT).replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise ValueError(f"timestamp {text!r} is not RFC 3339 UTC like 2024-05-01T12:00:00.000123Z") from None


def verdict_topic(camera: str) -> bytes:
    """Return the topic frame ``verdict.<camera>`` for a camera."""
    return (VERDICT_TOPIC_PREFIX + camera).encode("ascii")


def anomaly_map_to_u8(amap: np.ndarray, pixel_threshold: float) -> np.ndarray:
    """An anomaly map as the ``anomaly_map_u8`` mask kind: linear, with 128 at the pixel threshold.

    A pixel is >= 128 exactly where the map is above the threshold (the engine's mask, whose pixel count is
    ``defect_area_px``): a value equal to the threshold is 127. 0 means no anomaly, and values from about twice
    the threshold saturate at 255.
    """
    per_unit = U8_AT_PIXEL_THRESHOLD / max(pixel_threshold, 1e-12)
    scaled = np.clip(np.floor(amap.astype(np.float64) * per_unit), 0, U8_MAX)
    above = amap > pixel_threshold
    scaled = np.where(
        above, np.maximum(scaled, U8_AT_PIXEL_THRESHOLD), np.minimum(scaled, U8_AT_PIXEL_THRESHOLD - 1)
    )
    return np.asarray(scaled, dtype=np.uint8)


def encode_mask(mask_u8: np.ndarray | None, kind: MaskKind = "anomaly_map_u8") -> tuple[bytes, MaskInfo]:
    """Encode a mask for the third message part.

    Args:
        mask_u8: 2-D uint8 image (H, W), or None when masks are disabled.
        kind: what the pixels mean (scaled anomaly map or binary 0/255 mask).

    Returns:
        (PNG bytes, info), or (b"", info with encoding "none") when ``mask_u8`` is None.

    Raises:
        ValueError: the array is not 2-D uint8 or OpenCV cannot encode it.
    """
    if mask_u8 is None:
        return b"", MaskInfo(encoding="none", kind=kind, width=0, height=0)
    if mask_u8.dtype != np.uint8 or mask_u8.ndim != 2 or mask_u8.size == 0:
        raise ValueError(
            f"mask must be a non-empty 2-D uint8 array, got {mask_u8.dtype} shape {mask_u8.shape}"
        )
    ok, buf = cv2.imencode(".png", mask_u8, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION_LEVEL])
    if not ok:
        raise ValueError(f"OpenCV could not PNG-encode mask of shape {mask_u8.shape}")
    height, width = mask_u8.shape
    return buf.tobytes(), MaskInfo(encoding="png", kind=kind, width=width, height=height)


def decode_mask(mask_bytes: bytes, info: MaskInfo) -> np.ndarray | None:
    """Decode the mask part back to a 2-D uint8 array (None when encoding is "none").

    Raises:
        ValueError: the bytes are not a PNG of the size stated in ``info``.
    """
    if info.encoding == "none":
        return None
    image = cv2.imdecode(np.frombuffer(mask_bytes, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.ndim != 2 or image.shape != (info.height, info.width):
        got = "undecodable bytes" if image is None else f"shape {image.shape}"
        raise ValueError(f"mask part: expected {info.height}x{info.width} 8-bit PNG, got {got}")
    return np.asarray(image, dtype=np.uint8)


def _validation_message(what: str, exc: ValidationError) -> str:
    return f"{what}: " + "; ".join(validation_lines(exc))


def _check_schema_version(what: str, version: int) -> None:
    if version != SCHEMA_VERSION:
        raise ValueError(f"{what}: unsupported schema version {version} (this build reads {SCHEMA_VERSION})")


def _as_bytes_list(parts: list[bytes], expected: int, what: str) -> list[bytes]:
    if not isinstance(parts, (list, tuple)) or len(parts) != expected:
        count = len(parts) if isinstance(parts, (list, tuple)) else type(parts).__name__
        raise ValueError(f"{what}: expected {expected} message parts, got {count}")
    out = []
    for index, part in enumerate(parts):
        if isinstance(part, memoryview):
            part = part.tobytes()
        if not isinstance(part, bytes):
            # ValueError, not TypeError: callers catch one exception type for every malformed message.
            raise ValueError(f"{what}: part {index} must be bytes, got {type(part).__name__}")  # noqa: TRY004
        out.append(part)
    return out


def encode_verdict(header: VerdictHeader, mask_png: bytes) -> list[bytes]:
    """Build the multipart message ``[topic, header JSON, mask]`` for one frame.

    Raises:
        ValueError: the mask bytes disagree with ``header.mask`` (PNG expected but empty, or vice versa).
    """
    if header.mask.encoding == "none" and mask_png:
        raise ValueError(
            f"camera {header.camera}: mask encoding is none but {len(mask_png)} mask bytes given"
        )
    if header.mask.encoding == "png" and not mask_png.startswith(PNG_SIGNATURE):
        raise ValueError(f"camera {header.camera}: mask encoding is png but the mask bytes are not a PNG")
    return [verdict_topic(header.camera), header.model_dump_json().encode("utf-8"), mask_png]


def decode_verdict(parts: list[bytes]) -> tuple[str, VerdictHeader, bytes]:
    """Parse and validate a verdict message.

    Args:
        parts: the three frames received from a SUB socket.

    Returns:
        (topic, header, mask bytes).

    Raises:
        ValueError: wrong part count, topic not ``verdict.<camera>`` of the header's camera, header not
            valid JSON for :class:`VerdictHeader`, unsupported schema version, or mask bytes that
            contradict ``header.mask``. The message names the offending part or field.
    """
    topic_b, header_b, mask = _as_bytes_list(parts, 3, "verdict message")
    topic = topic_b.decode("utf-8", errors="replace")
    if not topic.startswith(VERDICT_TOPIC_PREFIX):
        raise ValueError(f"verdict message: topic {topic!r} does not start with {VERDICT_TOPIC_PREFIX!r}")
    try:
        header = VerdictHeader.model_validate_json(header_b)
    except ValidationError as exc:
        raise ValueError(_validation_message(f"verdict header on topic {topic!r}", exc)) from None
    _check_schema_version(f"verdict header on topic {topic!r}", header.schema_version)
    if topic != VERDICT_TOPIC_PREFIX + header.camera:
        raise ValueError(f"verdict message: topic {topic!r} does not match header camera {header.camera!r}")
    if header.mask.encoding == "none" and mask:
        raise ValueError(
            f"verdict message on {topic!r}: mask encoding is none but mask part has {len(mask)} bytes"
        )
    if header.mask.encoding == "png" and not mask.startswith(PNG_SIGNATURE):
        raise ValueError(f"verdict message on {topic!r}: mask encoding is png but mask part is not a PNG")
    return topic, header, mask


def encode_heartbeat(heartbeat: Heartbeat) -> list[bytes]:
    """Build the two-part message ``[b"heartbeat", header JSON]``."""
    return [HEARTBEAT_TOPIC.encode("ascii"), heartbeat.model_dump_json().encode("utf-8")]


def decode_heartbeat(parts: list[bytes]) -> Heartbeat:
    """Parse and validate a heartbeat message ``[b"heartbeat", header JSON]``.

    Raises:
        ValueError: wrong part count or topic, invalid header, or unsupported schema version.
    """
    topic_b, header_b = _as_bytes_list(parts, 2, "heartbeat message")
    if topic_b != HEARTBEAT_TOPIC.encode("ascii"):
        raise ValueError(f"heartbeat message: topic {topic_b!r} is not {HEARTBEAT_TOPIC!r}")
    try:
        heartbeat = Heartbeat.model_validate_json(header_b)
    except ValidationError as exc:
        raise ValueError(_validation_message("heartbeat header", exc)) from None
    _check_schema_version("heartbeat header", heartbeat.schema_version)
    return heartbeat


def latency_s(header: VerdictHeader) -> float | None:
    """Capture-to-publish latency in seconds: ``latency_ms["end_to_end"]`` or the timestamp difference."""
    if "end_to_end" in header.latency_ms:
        return header.latency_ms["end_to_end"] / 1000.0
    delta = parse_rfc3339(header.published_at) - parse_rfc3339(header.captured_at)
    return delta if math.isfinite(delta) and delta >= 0.0 else None


def _verdict_rules() -> list[dict[str, Any]]:
    """The per-verdict rules of :class:`VerdictHeader`'s validator, as JSON Schema ``if``/``then`` pairs."""
    number = {"type": "number"}
    return [
        {
            "if": {"properties": {"verdict": {"enum": list(SCORED_VERDICTS)}}},
            "then": {"properties": {"score": number, "threshold": number, "error": {"type": "null"}}},
        },
        {
            "if": {"properties": {"verdict": {"enum": ["TIMEOUT", "ERROR"]}}},
            "then": {"properties": {"error": {"type": "string", "minLength": 1}}},
        },
    ]


def _mask_rules() -> list[dict[str, Any]]:
    """:class:`MaskInfo`'s validator as JSON Schema: a PNG has a size, no mask has none."""
    positive, zero = {"type": "integer", "minimum": 1}, {"const": 0}
    return [
        {
            "if": {"properties": {"encoding": {"const": "png"}}},
            "then": {"properties": {"width": positive, "height": positive}},
            "else": {"properties": {"width": zero, "height": zero}},
        }
    ]


def _schema_document(model: type[BaseModel], topic: str) -> str:
    schema = model.model_json_schema(by_alias=True, mode="serialization")
    schema = {"$schema": JSON_SCHEMA_DIALECT, "x-topic": topic, "x-schema-version": SCHEMA_VERSION, **schema}
    if model is VerdictHeader:
        schema["allOf"] = _verdict_rules()
        schema["$defs"]["MaskInfo"]["allOf"] = _mask_rules()
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def export_schemas(out_dir: Path) -> list[Path]:
    """Write the JSON Schemas of the verdict and heartbeat headers.

    Args:
        out_dir: folder (normally ``docs/``); created if missing.

    Returns:
        The paths written: ``verdict.schema.json`` and ``heartbeat.schema.json``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    documents = {
        VERDICT_SCHEMA_FILE: _schema_document(VerdictHeader, VERDICT_TOPIC_PREFIX + "<camera>"),
        HEARTBEAT_SCHEMA_FILE: _schema_document(Heartbeat, HEARTBEAT_TOPIC),
    }
    written = []
    for name, text in documents.items():
        path = out_dir / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in export_schemas(Path(sys.argv[1] if len(sys.argv) > 1 else "docs")):
        print(written_path)

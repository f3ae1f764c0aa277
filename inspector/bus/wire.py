"""Wire format of the verdict bus: pydantic message models, multipart encode/decode and JSON Schema export.

Every inspected frame produces one ZeroMQ multipart message ``[topic, header, mask]``:

* ``topic``: ``verdict.<camera>`` (ASCII). ZeroMQ subscriptions are byte prefixes, so subscribing to
  ``verdict.cam1`` also matches ``verdict.cam10``; subscribers that need one camera exactly compare
  ``header.camera``.
* ``header``: UTF-8 JSON of :class:`VerdictHeader`.
* ``mask``: a PNG-encoded 8-bit single-channel image, or empty bytes when ``header.mask.encoding == "none"``.

The daemon also publishes ``[b"heartbeat", header]`` with a :class:`Heartbeat` JSON header about once a second.
Their JSON Schemas are written by :mod:`inspector.bus.schemas` (``python -m inspector.bus.schemas docs``).
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from inspector.core.errors import validation_lines
from inspector.core.names import (
    CAMERA_NAME_PATTERN,
    COMPUTE_STAGES,
    LATENCY_STAGES,
    SCORED_VERDICTS,
    CameraState,
    Verdict,
)
from inspector.core.records import MAX_DEFECT_REGIONS

# 2: product, camera state; 3: verdict age_ms, camera state starting; 4: REVIEW verdict, review_threshold;
# 5: pixel_threshold, mask kind none, per-verdict field and latency rules, gallery as 64 hex, heartbeat worker
# state, stopping/stopped/failed states; 6: defect regions (defect_count, defects)
SCHEMA_VERSION = 6
VERDICT_TOPIC_PREFIX = "verdict."
HEARTBEAT_TOPIC = "heartbeat"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_COMPRESSION_LEVEL = 1  # 0..9; 1 trades a little size for much less CPU per frame
U8_AT_PIXEL_THRESHOLD = 128.0  # anomaly_map_u8: the 8-bit value of the gallery's pixel threshold
U8_MAX = 255
BOOT_ID_PATTERN = r"^[0-9a-f]{32}$"
GALLERY_HASH_PATTERN = r"^[0-9a-f]{64}$"  # SHA-256, 64 lowercase hex digits: the one gallery identity
SEQ_MAX = 2**63 - 1  # seq is a signed 64-bit counter in the daemon: it never wraps within a boot
RFC3339_UTC_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$"
RFC3339_UTC_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
VERDICT_SCHEMA_FILE = "verdict.schema.json"
HEARTBEAT_SCHEMA_FILE = "heartbeat.schema.json"

MaskEncoding = Literal["png", "none"]
MaskKind = Literal["anomaly_map_u8", "binary", "none"]
DaemonState = Literal["starting", "ready", "degraded", "stopping", "stopped", "failed"]
WorkerState = Literal["starting", "up", "stalled", "down", "stopping", "stopped"]
WORKER_ALIVE_STATES: frozenset[str] = frozenset({"up", "stopping"})  # worker_alive is true exactly in these
ALWAYS_STAGES: tuple[str, ...] = ("queue", "encode", "end_to_end")  # in every verdict's latency_ms
SCORED_FIELDS: tuple[str, ...] = (
    "score",
    "threshold",
    "pixel_threshold",
    "defect_area_px",
    "defect_count",
)  # set when scored
NULL_UNLESS_SCORED: tuple[str, ...] = (*SCORED_FIELDS, "review_threshold")  # null for TIMEOUT and ERROR
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

    encoding: MaskEncoding = Field(
        description="png: the third part is an 8-bit single-channel PNG; none: the third part is empty (0 bytes)."
    )
    kind: MaskKind = Field(
        description="anomaly_map_u8: v = clip(floor(map * 128 / pixel_threshold), 0, 255), then at least 128 "
        "exactly where map > pixel_threshold and at most 127 elsewhere; binary: 0 = normal, 255 = defect; "
        "none: no mask (encoding none)."
    )
    width: int = Field(ge=0, description="Mask width in pixels (0 when encoding is none).")
    height: int = Field(ge=0, description="Mask height in pixels (0 when encoding is none).")

    @model_validator(mode="after")
    def _size_matches_encoding(self) -> MaskInfo:
        has_size = self.width > 0 and self.height > 0
        if self.encoding == "png" and (not has_size or self.kind == "none"):
            raise ValueError("mask width and height must be positive and kind not none when encoding is png")
        if self.encoding == "none" and (self.width or self.height or self.kind != "none"):
            raise ValueError("mask kind must be none and width and height 0 when encoding is none")
        return self


NO_MASK = MaskInfo(encoding="none", kind="none", width=0, height=0)
MAX_DEFECTS = (
    MAX_DEFECT_REGIONS  # defect regions a header lists, largest first (defect_count counts them all)
)


class DefectInfo(_WireModel):
    """One connected region of the defect mask, in frame pixels (schema 6)."""

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
    seq: int = Field(
        ge=0,
        le=SEQ_MAX,
        description="Per-camera sequence number, +1 per frame (per trigger for an external camera), from 0 at "
        "each daemon start; a signed 64-bit counter that never wraps; restarts only with a new boot_id.",
    )
    frame_id: str | None = Field(
        default=None, description="Reserved for sources that number their frames: null in this release."
    )
    part_id: str | None = Field(
        default=None,
        description="The trigger's part_id (external cameras), or a folder camera's file name without its "
        "last suffix (000123.png -> 000123); null for video, stream and device cameras.",
    )
    captured_at: Timestamp
    published_at: Timestamp
    age_ms: LatencyMs = Field(
        description="How old the verdict was when sent: milliseconds from capture to publish (monotonic "
        "clock). Add the time since published_at to get its age on arrival; older than the line's budget: reject."
    )
    verdict: Verdict
    score: FiniteFloat | None = Field(
        default=None,
        description="Image anomaly score: a number for PASS/REVIEW/FAIL, null for TIMEOUT/ERROR.",
    )
    threshold: FiniteFloat | None = Field(
        default=None,
        description="The gallery's image threshold (FAIL when score > threshold): a number for PASS/REVIEW/FAIL, "
        "null for TIMEOUT/ERROR.",
    )
    pixel_threshold: FiniteFloat | None = Field(
        default=None,
        description="The gallery's pixel threshold (a map pixel above it is a defect pixel; the value 128 of "
        "an anomaly_map_u8 mask): a number for PASS/REVIEW/FAIL, null for TIMEOUT/ERROR.",
    )
    review_threshold: FiniteFloat | None = Field(
        default=None,
        description="Review threshold of a gallery with a review band: REVIEW when review_threshold < score "
        "<= threshold. A number for PASS/REVIEW/FAIL of such a gallery, else null (no band, or TIMEOUT/ERROR).",
    )
    defect_area_px: int | None = Field(
        default=None,
        ge=0,
        description="Pixels of the anomaly map above pixel_threshold, counted by the daemon whatever the mask "
        "encoding (the mask's pixels >= 128, or == 255, when one is sent): a number for PASS/REVIEW/FAIL, null for "
        "TIMEOUT/ERROR.",
    )
    defect_count: int | None = Field(
        default=None,
        ge=0,
        description="Connected regions of the defect mask (schema 6); null for TIMEOUT/ERROR.",
    )
    defects: list[DefectInfo] = Field(
        default_factory=list,
        max_length=MAX_DEFECTS,
        description=f"The largest {MAX_DEFECTS} defect regions, largest first (schema 6; empty when none).",
    )
    product: str | None = Field(
        default=None,
        description="The product (recipe) the frame was inspected as; its gallery is ``gallery``. Null only "
        "for an ERROR whose product could not be resolved.",
    )
    gallery: str | None = Field(
        default=None,
        pattern=GALLERY_HASH_PATTERN,
        description="The gallery identity: gallery_sha256 (64 lowercase hex, SHA-256 over its tensors and whole "
        "manifest) of the gallery that scored the frame. Null only for an ERROR whose product names no "
        "loaded gallery.",
    )
    latency_ms: dict[str, LatencyMs] = Field(
        default_factory=dict,
        json_schema_extra={"propertyNames": {"enum": list(LATENCY_STAGES)}},
        description="Milliseconds per stage: queue, encode and end_to_end (capture to publish) in every verdict; "
        "preprocess, backbone, image_knn, pixel_match, upsample_blur (the whole batch's time) in PASS/REVIEW/FAIL "
        "only.",
    )
    mask: MaskInfo = NO_MASK
    error: str | None = Field(
        default=None,
        description="The reason: a non-empty string for TIMEOUT/ERROR, null for PASS/REVIEW/FAIL.",
    )

    @model_validator(mode="after")
    def _verdict_fields_consistent(self) -> VerdictHeader:
        scored = self.verdict in SCORED_VERDICTS
        set_fields = [name for name in NULL_UNLESS_SCORED if getattr(self, name) is not None]
        stages = (*ALWAYS_STAGES, *COMPUTE_STAGES) if scored else ALWAYS_STAGES
        missing = [name for name in SCORED_FIELDS if name not in set_fields]
        if scored and missing:
            raise ValueError(f"{', '.join(missing)} required when verdict is {self.verdict}")
        if scored and self.error is not None:
            raise ValueError(f"error must be null when verdict is {self.verdict}")
        if not scored and not self.error:
            raise ValueError(f"error must give the reason when verdict is {self.verdict}")
        if not scored and set_fields:
            raise ValueError(f"{', '.join(set_fields)} must be null when verdict is {self.verdict}")
        if not scored and self.defects:
            raise ValueError(f"defects must be empty when verdict is {self.verdict}")
        if len(self.defects) > (self.defect_count or 0):
            raise ValueError(
                f"defects lists {len(self.defects)} regions but defect_count is {self.defect_count}"
            )
        if not scored and self.mask.encoding != "none":
            raise ValueError(f"mask encoding must be none when verdict is {self.verdict}")
        missing_stages = [stage for stage in stages if stage not in self.latency_ms]
        extra_stages = [stage for stage in self.latency_ms if stage not in stages]
        if missing_stages or extra_stages:
            raise ValueError(
                f"latency_ms of a {self.verdict} verdict has the keys {', '.join(stages)}: "
                f"missing {missing_stages}, not allowed {extra_stages}"
            )
        return self


class CameraStatus(_WireModel):
    """One camera's state inside a heartbeat."""

    state: CameraState = Field(
        description="starting: opening its source for the first time (not a fault); up: delivering frames; "
        "down: not delivering after a failure (reconnecting, or given up past its restart budget); paused: "
        "stopped by the control socket (not a fault); ended: a file or folder source finished; stopping, "
        "stopped: a clean stop of the daemon is finishing, has finished the camera (not a fault)."
    )
    up: bool = Field(description="The camera is connected and delivering frames.")
    frames: int = Field(ge=0, description="Frames captured since the daemon started.")
    last_seq: int | None = Field(
        default=None,
        ge=0,
        le=SEQ_MAX,
        description="seq of the last verdict of this camera published before this heartbeat; null before the "
        "first one of this boot.",
    )


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
    state: DaemonState = Field(
        description="starting: loading galleries and warming up, no verdict yet; ready: every verdict can be "
        "published; degraded: a camera is down or the worker is stalled or down; stopping: a stop is draining "
        "(accepted frames still get verdicts); stopped: the last heartbeat of a clean stop (exit 0); failed: "
        "the last heartbeat of a stop after a failure (non-zero exit, systemd restarts the service)."
    )
    uptime_s: float = Field(ge=0.0, allow_inf_nan=False, description="Seconds since the daemon started.")
    cameras: dict[str, CameraStatus] = Field(default_factory=dict, description="Camera name -> status.")
    frames_published: int = Field(ge=0, description="Verdict messages published since start.")
    worker: WorkerState = Field(
        default="up",
        description="The model worker: starting (not started yet, or waiting for ready); up (making "
        "progress); stalled (one step past worker.stall_timeout_s: supervision replaces it); down (failed: the "
        "daemon exits non-zero); stopping (draining at a stop); stopped (drained).",
    )
    worker_alive: bool = Field(description="true exactly when worker is up or stopping.")

    @model_validator(mode="before")
    @classmethod
    def _worker_from_alive(cls, data: Any) -> Any:
        """A heartbeat built without ``worker`` (tests, older callers): up when alive, else stalled."""
        if isinstance(data, dict) and "worker" not in data and isinstance(data.get("worker_alive"), bool):
            return {**data, "worker": "up" if data["worker_alive"] else "stalled"}
        return data

    @model_validator(mode="after")
    def _alive_matches_worker(self) -> Heartbeat:
        if self.worker_alive != (self.worker in WORKER_ALIVE_STATES):
            raise ValueError(
                f"worker_alive must be true exactly when worker is up or stopping, not {self.worker}"
            )
        return self


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
    """An anomaly map as the ``anomaly_map_u8`` mask kind: linear, with 128 at the pixel threshold ``t``.

    ``v = clip(floor(a * 128 / t), 0, 255)`` (floor, not rounding), then ``v >= 128`` is forced exactly where
    ``a > t`` and ``v <= 127`` elsewhere, so the pixels >= 128 are the engine's mask (``defect_area_px``) and a
    value equal to ``t`` is 127. Back to the map: ``v`` in 1..254 covers ``[v, v + 1) * t / 128``, 0 covers
    ``a < t / 128``, 127 covers ``[127 t / 128, t]``, 128 covers ``(t, 129 t / 128)``, 255 covers
    ``a >= 255 t / 128`` (saturated, about twice the threshold). See :func:`u8_to_anomaly_map`.
    """
    per_unit = U8_AT_PIXEL_THRESHOLD / max(pixel_threshold, 1e-12)
    scaled = np.clip(np.floor(amap.astype(np.float64) * per_unit), 0, U8_MAX)
    above = amap > pixel_threshold
    scaled = np.where(
        above, np.maximum(scaled, U8_AT_PIXEL_THRESHOLD), np.minimum(scaled, U8_AT_PIXEL_THRESHOLD - 1)
    )
    return np.asarray(scaled, dtype=np.uint8)


def u8_to_anomaly_map(mask_u8: np.ndarray, pixel_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """The anomaly-map values each ``anomaly_map_u8`` pixel stands for: ``(low, high)`` arrays.

    The inverse of :func:`anomaly_map_to_u8` up to its quantisation: ``low = v * t / 128`` and
    ``high = (v + 1) * t / 128``, except ``high = t`` at 127 (the threshold itself is not a defect) and
    ``high = inf`` at 255 (saturated). ``(low + high) / 2`` is the best single estimate below 255.
    """
    per_value = pixel_threshold / U8_AT_PIXEL_THRESHOLD
    values = mask_u8.astype(np.float64)
    low = values * per_value
    high = (values + 1.0) * per_value
    high[mask_u8 == U8_AT_PIXEL_THRESHOLD - 1] = pixel_threshold
    high[mask_u8 == U8_MAX] = np.inf
    return low, high


def encode_mask(mask_u8: np.ndarray | None, kind: MaskKind = "anomaly_map_u8") -> tuple[bytes, MaskInfo]:
    """Encode a mask for the third message part.

    Args:
        mask_u8: 2-D uint8 image (H, W), or None when there is no mask.
        kind: what the pixels mean (scaled anomaly map or binary 0/255 mask).

    Returns:
        (PNG bytes, info), or (b"", :data:`NO_MASK`) when ``mask_u8`` is None.

    Raises:
        ValueError: the array is not 2-D uint8 or OpenCV cannot encode it.
    """
    if mask_u8 is None:
        return b"", NO_MASK
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

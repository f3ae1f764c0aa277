"""Names with one home: exit codes, image suffixes, stage and verdict names, the camera name rule."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

# Exit codes of every command (sysexits-style where one fits).
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2  # bad command line, or an endpoint that cannot be used
EXIT_UNREADABLE = 3  # score: at least one image could not be read
EXIT_TARGET_MISSED = 4  # eval: a gallery rejected more good parts than its false-reject target allows
EXIT_CONFIG = 78  # EX_CONFIG from sysexits.h: a bad configuration; systemd must not restart on it
EXIT_INTERRUPTED = 130  # a second Ctrl-C forced the exit (128 + SIGINT)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"})
"""File suffixes (lower case) read as images by folder cameras, gallery build, score and eval."""

COMPUTE_STAGES: tuple[str, ...] = ("preprocess", "backbone", "image_knn", "pixel_match", "upsample_blur")
"""Stages of scoring one batch, timed by the engine."""

LATENCY_STAGES: tuple[str, ...] = ("queue", *COMPUTE_STAGES, "encode", "end_to_end")
"""Keys of a verdict's ``latency_ms``: time waiting for the worker, the compute stages, mask encoding and
the whole path from capture to publish (``end_to_end``)."""

CameraState = Literal["starting", "up", "down", "paused", "ended", "stopping", "stopped"]
"""starting: opening its source for the first time (no failure yet, not a fault); up: delivering frames; down:
not delivering after a failure (reconnecting, or given up past its restart budget); paused: stopped by the
control socket (not a fault); ended: a file or folder source finished; stopping, stopped: a clean stop of the
daemon (SIGTERM) is finishing the camera's last read, and has finished it (not a fault)."""

Verdict = Literal["PASS", "REVIEW", "FAIL", "TIMEOUT", "ERROR"]
VERDICTS: tuple[Verdict, ...] = ("PASS", "REVIEW", "FAIL", "TIMEOUT", "ERROR")
"""Every verdict word. Only PASS means a good part; REVIEW (a gallery with a review band: the score between the
review and the image threshold) sends the part to a person, FAIL rejects it."""
SCORED_VERDICTS: tuple[Verdict, ...] = ("PASS", "REVIEW", "FAIL")
"""The verdicts that carry a score and a threshold."""

CAMERA_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$"
"""A camera name: it becomes the bus topic ``verdict.<name>`` and a metrics label."""

PRODUCT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
"""A product name, as the PLC, the verdicts and the metrics spell it."""

PART_ID_MAX_CHARS = 128
"""The longest part id a trigger may carry."""
DROP_REASONS: tuple[str, ...] = (
    "queue_full", "channel_busy", "process_restart", "stop_timeout", "pending_full",  # capture
    "batcher_full", "publish_failed", "pipeline_failed", "shutdown_timeout",  # daemon
)  # fmt: skip
"""Every reason a frame can be dropped for (``inspector_frames_dropped_total{reason}``): capture's reasons
(``inspector.capture.shared``) and the daemon's (``inspector.daemon.ledger``, ``inspector.daemon.pipeline``).
The metrics create every one at 0 per camera, so the first drop is visible to ``increase()``."""

QUEUES: tuple[str, ...] = ("capture", "batcher")
"""Queues a frame waits in (``inspector_queue_depth{queue, camera}``): its camera's capture channel, then the
batcher in front of the model worker."""

STATE_DIRECTORY_ENV = "STATE_DIRECTORY"  # set by systemd from StateDirectory= (colon-separated when several)


def state_directory(env: Mapping[str, str]) -> str:
    """The first folder systemd's ``StateDirectory=`` gives (empty outside systemd)."""
    return env.get(STATE_DIRECTORY_ENV, "").split(":")[0]

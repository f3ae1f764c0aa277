"""Tests for inspector.ops.logs: JSON and console rendering, levels, frame binding, no configuration at import."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from pydantic import ValidationError

from inspector.config.logs import LoggingConfig
from inspector.ops.logs import (
    HANDLER_MARK,
    LOG_VALUE_MAX_CHARS,
    LineRateLimit,
    LogThrottle,
    configure_logging,
    frame_logger,
    get_logger,
)
from tests.support import REPO_ROOT

ISO_UTC = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d+Z"


class TtyStream(io.StringIO):
    """A StringIO that claims to be a terminal."""

    def isatty(self) -> bool:
        """Pretend to be a TTY."""
        return True


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Undo configure_logging after each test so other test files see default logging."""
    root = logging.getLogger()
    level = root.level
    yield
    for handler in [h for h in root.handlers if getattr(h, HANDLER_MARK, False)]:
        root.removeHandler(handler)
    root.setLevel(level)
    structlog.reset_defaults()


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    """Parse every line written to ``stream`` as JSON."""
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_mode_emits_parseable_lines_with_camera_and_seq() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    frame_logger(get_logger("inspector.pipeline"), "cam1", 42).info("frame scored", score=1.5)
    (record,) = json_lines(stream)
    assert record["event"] == "frame scored"
    assert (record["camera"], record["seq"], record["score"]) == ("cam1", 42, 1.5)
    assert record["level"] == "info"
    assert record["logger"] == "inspector.pipeline"
    assert re.fullmatch(ISO_UTC, record["timestamp"])


def test_level_filters_lower_levels() -> None:
    stream = io.StringIO()
    configure_logging("warning", "json", stream)
    log = get_logger("x")
    log.info("hidden")
    log.warning("shown")
    assert [r["event"] for r in json_lines(stream)] == ["shown"]


def test_stdlib_records_use_the_same_json_format() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    logging.getLogger("thirdparty").warning("disk %s full", "/var")
    (record,) = json_lines(stream)
    assert (record["event"], record["logger"], record["level"]) == ("disk /var full", "thirdparty", "warning")


def test_exceptions_are_structured_without_locals() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    secret = "hunter2"
    try:
        raise RuntimeError("camera cam1 vanished")
    except RuntimeError:
        get_logger("x").exception("capture failed")
    assert secret not in stream.getvalue()
    (record,) = json_lines(stream)
    assert record["exception"][0]["exc_value"] == "camera cam1 vanished"


def test_auto_format_is_json_for_pipes_and_console_for_ttys() -> None:
    pipe = io.StringIO()
    configure_logging("info", "auto", pipe)
    get_logger("x").info("hello", camera="cam1")
    assert json_lines(pipe)[0]["camera"] == "cam1"
    tty = TtyStream()
    configure_logging("info", "auto", tty)
    get_logger("x").info("hello", camera="cam1")
    text = tty.getvalue()
    assert "hello" in text and "cam1" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_reconfiguring_replaces_the_previous_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("info", "json", first)
    configure_logging("info", "json", second)
    get_logger("x").info("once")
    assert first.getvalue() == ""
    assert len(json_lines(second)) == 1


def test_logging_config_validates_level_and_format() -> None:
    assert LoggingConfig().level == "info"
    with pytest.raises(ValidationError, match="level"):
        LoggingConfig(level="verbose")
    with pytest.raises(ValidationError, match="format"):
        LoggingConfig(format="xml")


def test_import_does_not_configure_logging() -> None:
    code = (
        "import logging, structlog, inspector.ops.logs\n"
        "assert not structlog.is_configured()\n"
        "assert logging.getLogger().handlers == []\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr


def test_log_throttle_lets_one_line_per_key_and_interval_through_and_counts_the_rest() -> None:
    now = [0.0]
    throttle = LogThrottle(60.0, clock=lambda: now[0])
    assert throttle.allow("disk_full") == 0
    assert throttle.allow("disk_full") is None
    assert throttle.allow("read_only") == 0  # another key has its own budget
    now[0] = 30.0
    assert throttle.allow("disk_full") is None
    now[0] = 61.0
    assert throttle.allow("disk_full") == 2  # two lines were held back since the last one
    assert throttle.allow("disk_full") is None


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_each_event_key_writes_a_few_lines_per_window_and_the_next_says_how_many_were_suppressed() -> None:
    clock = FakeClock()
    limit = LineRateLimit(lines=3, window_s=1.0, clock=clock)
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    handler = next(h for h in logging.getLogger().handlers if getattr(h, HANDLER_MARK, False))
    handler.filters = [limit]
    log = get_logger("flood")
    for _ in range(50):
        log.warning("trigger_rejected", reason="malformed")
    log.warning("other_event")
    clock.now += 1.5
    log.warning("trigger_rejected", reason="malformed")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    rejected = [line for line in lines if line["event"] == "trigger_rejected"]
    assert len(rejected) == 4 and "suppressed" not in rejected[2]
    assert rejected[3]["suppressed"] == 47
    assert [line["event"] for line in lines].count("other_event") == 1  # another key: its own budget


def test_a_long_value_is_cut_in_the_line_but_not_a_traceback() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    get_logger("long").warning("unknown_camera", camera="c" * 65_000)
    try:
        raise ValueError("x" * 5000)
    except ValueError:
        get_logger("long").error("failed", exc_info=True)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert len(first["camera"]) < LOG_VALUE_MAX_CHARS + 40 and first["camera"].endswith("(65000 characters)")
    assert "x" * 5000 in json.dumps(second["exception"])


def test_stdlib_records_are_rate_limited_by_their_message_template_too() -> None:
    clock = FakeClock()
    limit = LineRateLimit(lines=1, window_s=1.0, clock=clock)
    record = logging.LogRecord("asyncio", logging.ERROR, __file__, 1, "accept failed: %s", ("EMFILE",), None)
    assert limit.filter(record) and not limit.filter(record) and not limit.filter(record)
    clock.now += 1.0
    again = logging.LogRecord("asyncio", logging.ERROR, __file__, 1, "accept failed: %s", ("EMFILE",), None)
    assert limit.filter(again) and again.getMessage() == "accept failed: EMFILE [2 similar lines suppressed]"

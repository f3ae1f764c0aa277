"""Structured logging: structlog over the stdlib root logger, JSON lines in production, console on a TTY.

Nothing is configured at import: the daemon calls :func:`configure_logging` once at start-up. Records from
third-party libraries that use the stdlib ``logging`` module go through the same renderer. Every line is
bounded: a value longer than ``LOG_VALUE_MAX_CHARS`` is cut, and each event key (logger and event name) may
write ``LOG_LINES_PER_WINDOW`` lines per ``LOG_WINDOW_S``; the next line let through after a burst carries
``suppressed``, the number held back, so a flood of bad input costs a few lines, never megabytes.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO, TypeVar

import structlog
from structlog.typing import BindableLogger, EventDict, Processor, WrappedLogger

from inspector.config.logs import LogFormat, LogLevel

HANDLER_MARK = "_inspector_log_handler"
LOG_VALUE_MAX_CHARS = 1024  # a longer string value in a log line is cut (tracebacks excepted)
LOG_LINES_PER_WINDOW = 10  # lines per event key per window ...
LOG_WINDOW_S = 1.0  # ... of this many seconds; the rest are counted and reported by the next line let through
LOG_KEYS_MAX = 4096  # event keys remembered by the rate limit; stale ones are forgotten beyond it
UNBOUNDED_KEYS = frozenset({"exception", "stack"})
SUPPRESSED_KEY = "suppressed"

_LoggerT = TypeVar("_LoggerT", bound=BindableLogger)


def _shared_processors() -> list[Processor]:
    """Processors applied to structlog and foreign (stdlib) records alike."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]


def _use_json(fmt: LogFormat, stream: TextIO) -> bool:
    if fmt == "auto":
        isatty = getattr(stream, "isatty", None)
        return not (callable(isatty) and isatty())
    return fmt == "json"


def configure_logging(
    level: LogLevel = "info", fmt: LogFormat = "auto", stream: TextIO | None = None
) -> None:
    """Configure structlog and the stdlib root logger. Safe to call again (replaces the earlier setup).

    Args:
        level: lowest level written (debug, info, warning, error).
        fmt: json (keys timestamp [ISO 8601 UTC], level, event, logger, plus bound keys), console, or auto
            (console when ``stream`` is a TTY, JSON otherwise, e.g. under systemd/journald).
        stream: where lines go; None means ``sys.stderr`` at call time.
    """
    out = sys.stderr if stream is None else stream
    as_json = _use_json(fmt, out)
    shared = _shared_processors()
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    if as_json:
        # Tracebacks as structured data, without local variables (large, and may hold secrets).
        tracebacks = structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        )
        final: list[Processor] = [tracebacks, structlog.processors.JSONRenderer()]
    else:
        isatty = getattr(out, "isatty", None)
        final = [structlog.dev.ConsoleRenderer(colors=bool(callable(isatty) and isatty()))]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, clip_values, *final],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    handler.addFilter(LineRateLimit())
    setattr(handler, HANDLER_MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, HANDLER_MARK, False)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level.upper())


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """Return a structured logger whose records carry ``logger=name``."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger


def frame_logger(log: _LoggerT, camera: str, seq: int) -> _LoggerT:
    """Bind ``camera`` and ``seq`` so every line about one frame can be found and joined with its verdict.

    Args:
        log: any structlog bound logger.
        camera: camera name.
        seq: the frame's sequence number (the verdict's ``seq``).

    Returns:
        A new logger with both keys bound.
    """
    return log.bind(camera=camera, seq=seq)


class LogThrottle:
    """One log line per key every ``interval_s`` for repeated trouble (a full disk, a full queue).

    The first occurrence of a key is let through at once; later ones within the interval are held back and
    counted, and the next line let through says how many were held back.
    """

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        """Throttle to one line per key per ``interval_s`` seconds of ``clock``."""
        self._interval_s = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> int | None:
        """None: hold this line back. A number: write it, saying that many earlier lines were held back."""
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval_s:
                self._held[key] = self._held.get(key, 0) + 1
                return None
            self._last[key] = now
            return self._held.pop(key, 0)


def clip_values(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Structlog processor: cut every string value longer than ``LOG_VALUE_MAX_CHARS`` (tracebacks excepted)."""
    for key, value in event_dict.items():
        if isinstance(value, str) and len(value) > LOG_VALUE_MAX_CHARS and key not in UNBOUNDED_KEYS:
            event_dict[key] = f"{value[:LOG_VALUE_MAX_CHARS]}... ({len(value)} characters)"
    return event_dict


def _event_key(record: logging.LogRecord) -> tuple[str, str]:
    """(logger, event) of a record: structlog's event name, or a stdlib record's message template."""
    msg: Any = record.msg
    if isinstance(msg, dict):
        return record.name, str(msg.get("event", ""))[:LOG_VALUE_MAX_CHARS]
    return record.name, str(msg)[:LOG_VALUE_MAX_CHARS]


class LineRateLimit(logging.Filter):
    """A handler filter: at most ``lines`` lines per event key per ``window_s``; the rest are counted.

    The first line of a key in a new window is let through carrying ``suppressed`` (structlog lines) or a
    ``[N similar lines suppressed]`` suffix (stdlib lines) when lines were held back in the windows before.
    """

    def __init__(
        self,
        lines: int = LOG_LINES_PER_WINDOW,
        window_s: float = LOG_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = LOG_KEYS_MAX,
    ) -> None:
        """Let ``lines`` lines per key through in each ``window_s`` of ``clock``."""
        super().__init__()
        self._lines = lines
        self._window_s = window_s
        self._clock = clock
        self._max_keys = max_keys
        self._windows: dict[tuple[str, str], list[float]] = {}  # key -> [window start, let through, held]
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        """True: write the line (annotated with what was held back before it); False: hold it back."""
        key, now = _event_key(record), self._clock()
        with self._lock:
            state = self._windows.get(key)
            if state is not None and now - state[0] < self._window_s:
                if state[1] < self._lines:
                    state[1] += 1
                    return True
                state[2] += 1
                return False
            held = int(state[2]) if state is not None else 0
            if len(self._windows) >= self._max_keys:
                self._forget_stale(now)
            self._windows[key] = [now, 1, 0]
        if held:
            _annotate(record, held)
        return True

    def _forget_stale(self, now: float) -> None:
        """Drop keys whose window ended (caller holds the lock); all of them if none has."""
        stale = [k for k, v in self._windows.items() if now - v[0] >= self._window_s and not v[2]]
        for k in stale or list(self._windows):
            del self._windows[k]


def _annotate(record: logging.LogRecord, held: int) -> None:
    msg: Any = record.msg
    if isinstance(msg, dict):
        msg[SUPPRESSED_KEY] = held
    else:
        record.msg = f"{record.getMessage()} [{held} similar lines suppressed]"
        record.args = ()

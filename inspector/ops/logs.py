"""Structured logging: structlog over the stdlib root logger, JSON lines in production, console on a TTY.

Nothing is configured at import: the daemon calls :func:`configure_logging` once at start-up. Records from
third-party libraries that use the stdlib ``logging`` module go through the same renderer.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO, TypeVar

import structlog
from structlog.typing import BindableLogger, Processor

from inspector.config.logs import LogFormat, LogLevel

HANDLER_MARK = "_inspector_log_handler"

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
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
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

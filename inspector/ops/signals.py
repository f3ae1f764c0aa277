"""Signals of long-running commands: SIGTERM/SIGINT ask to stop, a second SIGINT exits at once, SIGHUP reloads."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, NoReturn, TextIO

from inspector.core.names import EXIT_INTERRUPTED

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _exit_now(code: int) -> NoReturn:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@contextmanager
def capture_signals(
    on_stop: Callable[[str], None],
    force_exit: Callable[[int], Any] = _exit_now,
    stream: TextIO | None = None,
    on_reload: Callable[[], None] | None = None,
) -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT call ``on_stop(signal name)``; the previous handlers come back after.

    A graceful stop may take as long as its drain allows; an operator who presses Ctrl-C again means it: once a
    stop was requested, a SIGINT prints one line and calls ``force_exit(130)`` (by default ``os._exit``, which
    skips every cleanup). A second SIGTERM only repeats the request (systemd follows up with SIGKILL itself).

    Args:
        on_stop: called (in the main thread, from the signal handler) with ``"SIGTERM"`` or ``"SIGINT"``;
            it must only set flags or events.
        force_exit: called with the exit status on the second SIGINT.
        stream: where the forced-exit line goes (default ``sys.stderr`` at that time).
        on_reload: when given, SIGHUP calls it (as ``systemctl reload`` sends); it must only set flags.
    """
    requested = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal requested
        name = signal.Signals(signum).name
        if requested and signum == signal.SIGINT:
            print(
                "interrupted again: exiting now, without finishing accepted frames", file=stream or sys.stderr
            )
            force_exit(EXIT_INTERRUPTED)
            return
        requested = True
        on_stop(name)

    def reload_handler(signum: int, frame: FrameType | None) -> None:
        if on_reload is not None:
            on_reload()

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    if on_reload is not None:
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, reload_handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)

"""Progress of long commands on stderr: a bar with an ETA on a terminal, a plain line now and then elsewhere."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self, TextIO

from tqdm import tqdm

PLAIN_INTERVAL_S = 10.0  # seconds between two plain progress lines (logs, pipes, CI)


class PlainProgress:
    """Progress as plain lines (``features: 40/120 img, 12 s, about 24 s left``) for a stderr that is not a
    terminal: one when the step starts, then at most one every ``interval_s``, and one at the end."""

    def __init__(
        self,
        total: int,
        desc: str,
        stream: TextIO | None = None,
        interval_s: float = PLAIN_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Announce the step (``desc``, ``total`` images) on ``stream`` (default: stderr at that time)."""
        self.total, self.desc, self.done = total, desc, 0
        self._stream, self._interval, self._clock = stream, interval_s, clock
        self._start = self._last = clock()
        self._closed = False
        self._print(f"{desc}: {total} img")

    def _print(self, line: str) -> None:
        print(line, file=self._stream or sys.stderr, flush=True)

    def _line(self) -> str:
        elapsed = self._clock() - self._start
        text = f"{self.desc}: {self.done}/{self.total} img, {elapsed:.0f} s"
        if 0 < self.done < self.total:
            text += f", about {elapsed * (self.total - self.done) / self.done:.0f} s left"
        return text

    def update(self, n: int = 1) -> None:
        """Count ``n`` more images; print a line when ``interval_s`` has passed since the last one."""
        self.done += n
        now = self._clock()
        if now - self._last >= self._interval and self.done < self.total:
            self._last = now
            self._print(self._line())

    def close(self) -> None:
        """Print the final line (once)."""
        if not self._closed:
            self._closed = True
            self._print(self._line())

    def __enter__(self) -> Self:
        """Use as a context manager."""
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Close on the way out; nothing more after an error or Ctrl-C (the error is the last line)."""
        if kind is None:
            self.close()
        self._closed = True


def progress_bar(total: int, desc: str) -> tqdm[Any] | PlainProgress:
    """A progress display of ``total`` images on stderr: a tqdm bar with an ETA on a terminal, else
    :class:`PlainProgress`. Either has ``update(n)``, ``close()`` and works as a context manager."""
    if sys.stderr.isatty():
        return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, dynamic_ncols=True, leave=False)
    return PlainProgress(total, desc)

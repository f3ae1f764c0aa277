"""systemd notification protocol (sd_notify): READY, STATUS, WATCHDOG and STOPPING datagrams."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Self

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"
WATCHDOG_USEC_ENV = "WATCHDOG_USEC"
WATCHDOG_PID_ENV = "WATCHDOG_PID"
USEC_PER_S = 1_000_000
WATCHDOG_FRACTION = 0.5  # ping at half the systemd timeout, as sd_watchdog_enabled(3) recommends


class SdNotifier:
    """Sends sd_notify datagrams to the socket named by ``NOTIFY_SOCKET``; a no-op when it is unset.

    Sending never blocks and never raises: a failed send returns False and is kept in ``last_error``
    (systemd may have gone away during shutdown, which must not take the daemon down).
    """

    def __init__(self, env: Mapping[str, str]) -> None:
        """Read ``NOTIFY_SOCKET`` from ``env`` (pass ``os.environ`` in production).

        Args:
            env: environment mapping; ``@name`` means a Linux abstract-namespace socket.

        Raises:
            ValueError: NOTIFY_SOCKET is set but is neither an absolute path nor ``@name``.
        """
        raw = env.get(NOTIFY_SOCKET_ENV, "")
        self._address: str | None = None
        if raw:
            if raw.startswith("@"):
                self._address = "\0" + raw[1:]
            elif raw.startswith("/"):
                self._address = raw
            else:
                raise ValueError(f"{NOTIFY_SOCKET_ENV}={raw!r} is neither an absolute path nor @abstract")
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self.last_error: OSError | None = None

    @property
    def enabled(self) -> bool:
        """True when NOTIFY_SOCKET was set."""
        return self._address is not None

    def notify(self, message: str) -> bool:
        """Send one raw notification (``KEY=VALUE`` lines).

        Returns:
            True when the datagram was sent; False when disabled or the send failed.
        """
        if self._address is None:
            return False
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                    self._sock.setblocking(False)
                self._sock.sendto(message.encode("utf-8"), self._address)
            except OSError as exc:
                self.last_error = exc
                return False
        return True

    def ready(self) -> bool:
        """Tell systemd start-up is complete (``READY=1``; needed with ``Type=notify``)."""
        return self.notify("READY=1")

    def status(self, text: str) -> bool:
        """Set the one-line status shown by ``systemctl status`` (newlines become spaces)."""
        return self.notify("STATUS=" + " ".join(text.splitlines()))

    def watchdog(self) -> bool:
        """Ping the service watchdog (``WATCHDOG=1``)."""
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        """Tell systemd the service is shutting down (``STOPPING=1``)."""
        return self.notify("STOPPING=1")

    def close(self) -> None:
        """Close the sending socket (a later notification reopens it)."""
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def __enter__(self) -> Self:
        """Use as a context manager that closes the socket on exit."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the socket."""
        self.close()


def watchdog_interval_s(env: Mapping[str, str], pid: int | None = None) -> float | None:
    """Return how often to ping the watchdog: half of ``WATCHDOG_USEC``, in seconds.

    Args:
        env: environment mapping.
        pid: this process id (default ``os.getpid()``); when ``WATCHDOG_PID`` is set and differs,
            the watchdog is meant for another process and None is returned.

    Returns:
        Seconds between pings, or None when the watchdog is not enabled for this process.

    Raises:
        ValueError: WATCHDOG_USEC or WATCHDOG_PID is set but not a positive integer.
    """
    raw_usec = env.get(WATCHDOG_USEC_ENV, "")
    if not raw_usec:
        return None
    usec = _positive_int(WATCHDOG_USEC_ENV, raw_usec)
    raw_pid = env.get(WATCHDOG_PID_ENV, "")
    if raw_pid and _positive_int(WATCHDOG_PID_ENV, raw_pid) != (os.getpid() if pid is None else pid):
        return None
    return usec * WATCHDOG_FRACTION / USEC_PER_S


def _positive_int(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None
    if value <= 0:
        raise ValueError(f"{name}={raw!r} must be positive")
    return value


def run_watchdog(
    notifier: SdNotifier,
    interval_s: float,
    healthy: Callable[[], bool],
    stop: threading.Event,
) -> None:
    """Ping the watchdog every ``interval_s`` while ``healthy()`` is true, until ``stop`` is set.

    When ``healthy()`` is false (e.g. the model worker made no progress) no ping is sent, so systemd
    restarts a hung daemon after ``WatchdogSec``.

    Args:
        notifier: the notifier.
        interval_s: from :func:`watchdog_interval_s`.
        healthy: liveness check, called once per interval.
        stop: set to end the loop.
    """
    while not stop.is_set():
        if healthy():
            notifier.watchdog()
        stop.wait(interval_s)

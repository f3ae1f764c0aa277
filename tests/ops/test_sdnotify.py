"""Tests for inspector.ops.sdnotify against real AF_UNIX datagram sockets (filesystem and abstract namespace)."""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from inspector.ops.sdnotify import SdNotifier, run_watchdog, watchdog_interval_s

RECV_TIMEOUT_S = 2.0
DATAGRAM_MAX = 4096


@pytest.fixture
def listener() -> Iterator[tuple[socket.socket, str]]:
    """A bound AF_UNIX datagram socket (short path: sun_path is limited to 108 bytes)."""
    folder = tempfile.mkdtemp(prefix="sdn")
    path = str(Path(folder) / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(RECV_TIMEOUT_S)
    yield sock, path
    sock.close()
    os.unlink(path)
    os.rmdir(folder)


def receive(sock: socket.socket) -> str:
    """One datagram as text."""
    return sock.recv(DATAGRAM_MAX).decode("utf-8")


def test_messages_reach_a_filesystem_socket(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    with SdNotifier({"NOTIFY_SOCKET": path}) as notifier:
        assert notifier.enabled
        assert notifier.ready()
        assert receive(sock) == "READY=1"
        assert notifier.status("scoring 3 cameras\nall up")
        assert receive(sock) == "STATUS=scoring 3 cameras all up"
        assert notifier.watchdog()
        assert receive(sock) == "WATCHDOG=1"
        assert notifier.stopping()
        assert receive(sock) == "STOPPING=1"


def test_abstract_namespace_socket_is_supported() -> None:
    name = f"inspector-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(RECV_TIMEOUT_S)
        with SdNotifier({"NOTIFY_SOCKET": "@" + name}) as notifier:
            assert notifier.ready()
            assert receive(sock) == "READY=1"


def test_unset_notify_socket_is_a_no_op() -> None:
    notifier = SdNotifier({})
    assert not notifier.enabled
    assert not notifier.ready()
    assert not notifier.watchdog()
    assert notifier.last_error is None


def test_relative_notify_socket_is_rejected_naming_the_variable() -> None:
    with pytest.raises(ValueError, match="NOTIFY_SOCKET='relative/path'"):
        SdNotifier({"NOTIFY_SOCKET": "relative/path"})


def test_missing_socket_returns_false_and_keeps_the_error(tmp_path: Path) -> None:
    notifier = SdNotifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert not notifier.ready()
    assert isinstance(notifier.last_error, OSError)
    notifier.close()


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000"}) == pytest.approx(15.0)
    assert watchdog_interval_s({}) is None


def test_watchdog_interval_respects_watchdog_pid() -> None:
    env = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "4242"}
    assert watchdog_interval_s(env, pid=4242) == pytest.approx(1.0)
    assert watchdog_interval_s(env, pid=4243) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}) == 1.0


@pytest.mark.parametrize("value", ["abc", "0", "-5"])
def test_invalid_watchdog_usec_is_rejected_naming_the_variable(value: str) -> None:
    with pytest.raises(ValueError, match="WATCHDOG_USEC"):
        watchdog_interval_s({"WATCHDOG_USEC": value})


def test_run_watchdog_pings_only_while_healthy(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    healthy = threading.Event()
    healthy.set()
    stop = threading.Event()
    notifier = SdNotifier({"NOTIFY_SOCKET": path})
    thread = threading.Thread(target=run_watchdog, args=(notifier, 0.01, healthy.is_set, stop))
    thread.start()
    try:
        assert receive(sock) == "WATCHDOG=1"
        healthy.clear()
        sock.settimeout(0.2)
        while True:  # drain pings sent before the flag was cleared
            try:
                sock.recv(DATAGRAM_MAX)
            except TimeoutError:
                break
        with pytest.raises(TimeoutError):
            sock.recv(DATAGRAM_MAX)
    finally:
        stop.set()
        thread.join(RECV_TIMEOUT_S)
        notifier.close()
    assert not thread.is_alive()

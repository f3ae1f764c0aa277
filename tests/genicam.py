"""The real fake GigE Vision camera of Aravis (``arv-fake-gv-camera-0.8 -i 127.0.0.1``) for the tests.

A host can run one fake camera at a time (it binds UDP port 3956, GigE Vision's control port), and other test
runs on the same machine (other worktrees, CI) may start one too. So every test that uses it holds a host-wide
lock file for as long as its camera runs, waits (bounded) for the port to be free, and stops its camera by PID.
Tests that use it carry the ``genicam`` marker.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from inspector.capture.aravis import load_aravis
from inspector.capture.shared import CaptureError

FAKE_CAMERA = "arv-fake-gv-camera-0.8"
ADDRESS = "127.0.0.1"
SIDE_PX = 512  # the fake camera's frames are 512 x 512
GVCP_PORT = 3956
LOCK_FILE = Path("/tmp/inspector-fake-gv-camera.lock")  # the same path for every checkout on this host
LOCK_WAIT_S = 1800.0  # another run's genicam tests hold it for a few minutes at most
PORT_WAIT_S = 300.0  # a camera started by someone without the lock: wait for it to go
START_WAIT_S = 30.0
POLL_S = 0.2
GRAB_TIMEOUT_US = 5_000_000


def missing_reason() -> str | None:
    """Why the fake camera cannot run here (None when it can)."""
    if shutil.which(FAKE_CAMERA) is None:
        return (
            f"{FAKE_CAMERA} is not installed (apt-get install aravis-tools; tools/bootstrap.sh --test does)"
        )
    try:
        load_aravis()
    except CaptureError as exc:
        return str(exc)
    return None


def port_holders() -> list[str]:
    """Processes listening on UDP port 3956 (any address), as ``pid command`` strings."""
    inodes = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == GVCP_PORT:
                    inodes.add(fields[9])
    holders = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            links = {os.readlink(fd) for fd in (proc / "fd").iterdir()}
            if any(f"socket:[{inode}]" in links for inode in inodes):
                name = (proc / "comm").read_text().strip()
                holders.append(f"{proc.name} {name}")
    return holders if holders or not inodes else [f"unknown process (socket inodes {sorted(inodes)})"]


class FakeCamera:
    """One ``arv-fake-gv-camera-0.8`` process on 127.0.0.1, started and stopped (by PID) by the test."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *args: str) -> None:
        """Start it (``args``: e.g. ``-r 300`` for a lost-packet ratio per thousand); wait until it listens."""
        assert self.proc is None, "the fake camera is already running"
        deadline = time.monotonic() + PORT_WAIT_S
        while port_holders():
            assert time.monotonic() < deadline, f"UDP port {GVCP_PORT} stays taken by {port_holders()}"
            time.sleep(POLL_S)
        command = [FAKE_CAMERA, "-i", ADDRESS, *args]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_WAIT_S
        while not port_holders():
            assert self.proc.poll() is None, f"{FAKE_CAMERA} exited ({self.proc.returncode}) on start"
            assert time.monotonic() < deadline, f"{FAKE_CAMERA} not listening after {START_WAIT_S:g} s"
            time.sleep(POLL_S)

    def kill(self) -> None:
        """SIGKILL it by PID (a power cut, a pulled cable) and wait for it."""
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def restart(self, *args: str) -> None:
        """Kill it if running, start a fresh one (registers back to their defaults)."""
        self.kill()
        self.start(*args)


@contextlib.contextmanager
def host_lock() -> Iterator[None]:
    """Hold the host-wide fake-camera lock (waiting, bounded, for another run to release it)."""
    with LOCK_FILE.open("a") as handle:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                assert time.monotonic() < deadline, (
                    f"{LOCK_FILE} held by another test run for {LOCK_WAIT_S:g} s"
                )
                time.sleep(POLL_S)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def running_fake_camera(*args: str) -> Iterator[FakeCamera]:
    """The host lock held and a fake camera started; both released at the end, whatever happened."""
    with host_lock():
        camera = FakeCamera()
        try:
            camera.start(*args)
            yield camera
        finally:
            camera.kill()


def grab_frames(folder: Path, count: int, frame_rate_hz: float = 20.0) -> list[Path]:
    """``count`` Mono8 frames of the running fake camera as BGR PNG files (its own size), through aravis."""
    aravis = load_aravis()
    folder.mkdir(parents=True, exist_ok=True)
    camera = aravis.Camera.new(ADDRESS)
    camera.set_pixel_format_from_string("Mono8")
    camera.set_frame_rate(frame_rate_hz)
    camera.clear_triggers()
    stream = camera.create_stream(None, None)
    for _ in range(4):
        stream.push_buffer(aravis.Buffer.new_allocate(camera.get_payload()))
    camera.start_acquisition()
    paths: list[Path] = []
    try:
        while len(paths) < count:
            buffer = stream.timeout_pop_buffer(GRAB_TIMEOUT_US)
            assert buffer is not None, "the fake camera sent no frame"
            if buffer.get_status() == aravis.BufferStatus.SUCCESS:
                grey = np.frombuffer(buffer.get_image_data(), np.uint8).reshape(SIDE_PX, SIDE_PX)
                path = folder / f"fake_{len(paths):03d}.png"
                cv2.imwrite(str(path), cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR))
                paths.append(path)
            stream.push_buffer(buffer)
    finally:
        camera.stop_acquisition()
        del stream, camera  # releases control of the camera for the code under test
    return paths

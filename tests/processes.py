"""Real processes and sockets the daemon tests share: the daemon as a subprocess, and a bus recorder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from inspector.bus.wire import Heartbeat, VerdictHeader, decode_heartbeat, decode_mask, decode_verdict
from tests.schemas import heartbeat_errors, mask_rule_errors, verdict_errors
from tests.support import WAIT_S, wait_until

START_TIMEOUT_S = 180.0  # imports, gallery validation and warm-up on a loaded 2-core machine
POLL_MS = 50


@dataclass
class Received:
    """What a SUB socket received: every verdict header and heartbeat, in arrival order."""

    verdicts: list[VerdictHeader] = field(default_factory=list)
    heartbeats: list[Heartbeat] = field(default_factory=list)
    messages: list[VerdictHeader | Heartbeat] = field(default_factory=list)  # both, in arrival order
    schema_errors: list[str] = field(
        default_factory=list
    )  # headers breaking docs/*.schema.json or the mask rule
    lock: threading.RLock = field(default_factory=threading.RLock)

    def of(self, camera: str) -> list[VerdictHeader]:
        """The verdicts of one camera."""
        with self.lock:
            return [v for v in self.verdicts if v.camera == camera]

    def count(self) -> int:
        """Verdicts received."""
        with self.lock:
            return len(self.verdicts)

    @property
    def headers(self) -> dict[tuple[str, int], VerdictHeader]:
        """The verdicts by (camera, seq)."""
        with self.lock:
            return {(v.camera, v.seq): v for v in self.verdicts}

    @property
    def states(self) -> list[str]:
        """Daemon states of the heartbeats, in order."""
        with self.lock:
            return [h.state for h in self.heartbeats]

    def before_first_verdict(self) -> list[Heartbeat]:
        """The heartbeats received before the first verdict (all of them when there is none)."""
        with self.lock:
            heartbeats = []
            for message in self.messages:
                if isinstance(message, VerdictHeader):
                    break
                heartbeats.append(message)
            return heartbeats

    @property
    def cameras_up(self) -> dict[str, bool]:
        """Each camera's ``up`` as the latest heartbeat says."""
        with self.lock:
            last = self.heartbeats[-1] if self.heartbeats else None
        return {name: cam.up for name, cam in last.cameras.items()} if last else {}


def check_clean_lifecycle(got: Received, last_cameras: dict[str, str]) -> None:
    """A normal start and a clean stop as a gateway sees them: no verdict before the first ready heartbeat,
    the worker ``starting`` (never down) until then, no failure state at any time, and the last heartbeat
    ``stopped`` with the worker and the running cameras ``stopped``."""
    before = [(h.state, h.worker) for h in got.before_first_verdict()]
    starting = next((i for i, beat in enumerate(before) if beat != ("starting", "starting")), len(before))
    assert 0 < starting < len(before), (
        f"no starting heartbeat, or none ready before the first verdict: {before}"
    )
    assert set(before[starting:]) == {("ready", "up")}, before
    failures = [
        (h.state, h.worker, {n: c.state for n, c in h.cameras.items()})
        for h in got.heartbeats
        if h.state in ("degraded", "failed")
        or h.worker in ("stalled", "down")
        or any(c.state == "down" for c in h.cameras.values())
    ]
    assert failures == [], f"a clean run reported failures: {failures[:3]}"
    seen = [h.worker for h in got.heartbeats]
    workers = [w for i, w in enumerate(seen) if i == 0 or seen[i - 1] != w]
    assert workers in (["starting", "up", "stopping", "stopped"], ["starting", "up", "stopped"]), workers
    last = got.heartbeats[-1]
    assert (last.state, last.worker, last.worker_alive) == ("stopped", "stopped", False)
    assert {name: cam.state for name, cam in last.cameras.items()} == last_cameras


class Subscriber:
    """A SUB socket connected before the daemon starts, recording everything in a thread.

    Every header received is validated against the shipped JSON Schemas (and a verdict's mask against the
    guide's mask rule); :meth:`close` fails the test if any was not valid.
    """

    def __init__(self, endpoint: str, setup: Callable[[zmq.Socket[bytes]], None] | None = None) -> None:
        """Connect and start recording; ``setup`` configures the socket first (e.g. CURVE client keys)."""
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        if setup is not None:
            setup(self.sock)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(endpoint)
        self.got = Received()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.sock.poll(POLL_MS):
                continue
            parts = self.sock.recv_multipart()
            with self.got.lock:
                if parts[0] == b"heartbeat":
                    self.got.schema_errors += heartbeat_errors(parts[1])
                    self.got.heartbeats.append(beat := decode_heartbeat(parts))
                    self.got.messages.append(beat)
                else:
                    self.got.schema_errors += verdict_errors(parts[1])
                    header = decode_verdict(parts)[1]
                    self.got.schema_errors += mask_rule_errors(parts[1], decode_mask(parts[2], header.mask))
                    self.got.verdicts.append(header)
                    self.got.messages.append(header)

    def close(self) -> None:
        """Stop recording and close the socket.

        Raises:
            AssertionError: a received header broke the shipped schemas or the mask rule.
        """
        self._stop.set()
        self._thread.join()
        self.sock.close(linger=0)
        self.ctx.term()
        with self.got.lock:
            errors = list(self.got.schema_errors)
        assert not errors, f"{len(errors)} received headers broke the schemas: {errors[:5]}"


class DaemonProcess:
    """``python -m inspector.cli run --config FILE`` with its JSON log lines collected from stderr.

    ``prefix`` runs it through another command (``unshare ...``), which must ``exec`` the daemon.
    """

    def __init__(
        self,
        config: Path,
        prefix: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        command: Sequence[str] = ("run",),
    ) -> None:
        """Start the daemon, or another long-running command that takes ``--config`` (``opcua``).

        ``env``: variables added to this process's environment.
        """
        cmd = [*prefix, sys.executable, "-m", "inspector.cli", *command, "--config", str(config)]
        environ = {**os.environ, **env} if env else None
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=environ
        )
        self.logs: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.raw.append(line)
            if line.startswith("{"):
                self.logs.append(json.loads(line))

    def event(self, name: str) -> dict[str, Any] | None:
        """The first log record with this event name, if any."""
        return next((e for e in list(self.logs) if e.get("event") == name), None)

    def events(self, name: str) -> list[dict[str, Any]]:
        """Every log record with this event name."""
        return [e for e in list(self.logs) if e.get("event") == name]

    def wait_event(self, name: str, timeout_s: float = START_TIMEOUT_S) -> dict[str, Any]:
        """Wait for a log record (failing with the log tail if the daemon exits first)."""
        wait_until(lambda: self.event(name) is not None or self.proc.poll() is not None, name, timeout_s)
        found = self.event(name)
        assert found is not None, (
            f"daemon exited ({self.proc.returncode}) before {name}: {''.join(self.raw)[-3000:]}"
        )
        return found

    def terminate(self) -> int:
        """SIGTERM; the exit status."""
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(WAIT_S)
        self._reader.join(WAIT_S)
        return code

    def close(self) -> None:
        """Kill the process if a failed test left it running; close its stderr pipe."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(WAIT_S)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def child_pids(parent: int) -> list[int]:
    """Process ids of the direct children of ``parent`` whose command line is a multiprocessing spawn
    (the camera processes; the resource tracker is left out)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and "spawn_main" in cmdline and "resource_tracker" not in cmdline:
            found.append(int(entry.name))
    return sorted(found)

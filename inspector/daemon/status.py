"""The daemon seen from outside: state, health, heartbeat, status line and per-camera accounting (read-only).

States tell a stop from a failure: the daemon goes ``starting`` -> ``ready`` (``degraded`` while a camera is
down or the worker is stalled or down) -> ``stopping`` -> ``stopped`` on a clean stop, or ``failed`` when it
exits non-zero; the worker ``starting`` -> ``up`` -> ``stopping`` -> ``stopped`` (``stalled``, ``down`` are
failures); each camera ends ``stopping`` -> ``stopped`` (or ``ended``) on a clean stop, never ``down``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from inspector.bus.wire import WORKER_ALIVE_STATES, CameraStatus, DaemonState, Heartbeat, WorkerState, rfc3339
from inspector.capture.shared import CameraStats
from inspector.config.root import InspectorConfig
from inspector.core.names import VERDICTS
from inspector.daemon.ledger import DROP_SHUTDOWN_TIMEOUT, CameraTally, FrameLedger
from inspector.ops.endpoint import Health

if TYPE_CHECKING:  # light at import: the early heartbeat runs before PyTorch is loaded
    from inspector.capture.manager import CaptureManager
    from inspector.daemon.pipeline import Pipeline

FPS_SAMPLES = 6  # samples about a second apart: fps over the last ~5 s
STOP_PHASES: frozenset[str] = frozenset({"stopping", "stopped", "failed"})
WORKER_FAILURES: frozenset[str] = frozenset({"stalled", "down"})  # /livez answers 503 (the watchdog stops)
STATE_REASONS: dict[str, str] = {
    "starting": "loading galleries and warming up; no verdict before ready",
    "stopping": "finishing the accepted frames (their verdicts are still published)",
    "stopped": "clean stop: every accepted frame was published or counted",
    "failed": "stopped after a failure (a restart budget spent or the pipeline failed): exit status 1",
}


class DaemonStatus:
    """What the heartbeat, ``systemctl status``, the summary (and later the control socket) report.

    The lifecycle writes only :attr:`phase` (``starting``, ``ready``, ``stopping``, ``stopped``, ``failed``)
    and :attr:`pipeline_failed`, and attaches the running parts; everything else is derived from the capture
    counters, the frame ledger and the pipeline's progress on each call, so it can never drift.
    """

    def __init__(
        self,
        config: InspectorConfig,
        boot_id: str,
        ledger: FrameLedger,
        verdicts_published: Callable[[], int],
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        started_at: float | None = None,
    ) -> None:
        """Create the view of a daemon that is still starting.

        Args:
            config: the daemon's configuration.
            boot_id: the daemon's boot id.
            ledger: the frame ledger.
            verdicts_published: verdict messages handed to the bus so far.
            wall_clock: Unix time for heartbeat timestamps.
            monotonic: clock for the uptime.
            started_at: ``monotonic()`` when the process started (default: now), for the uptime.
        """
        self.config = config
        self.boot_id = boot_id
        self.phase: DaemonState = "starting"
        self.pipeline_failed = False
        self._ledger = ledger
        self._verdicts_published = verdicts_published
        self._wall = wall_clock
        self._monotonic = monotonic
        self._started_at = monotonic() if started_at is None else started_at
        self._capture: CaptureManager | None = None
        self._pipeline: Pipeline | None = None
        self._pipeline_alive: Callable[[], bool] = lambda: False
        self._undelivered: dict[str, int] = {}
        self._conditions: list[Callable[[], list[str]]] = []
        self._faults: dict[str, str] = {}
        self._faults_lock = threading.Lock()
        self._rates: dict[str, deque[tuple[float, int]]] = {
            c.name: deque(maxlen=FPS_SAMPLES) for c in config.cameras
        }

    def attach(self, capture: CaptureManager, pipeline: Pipeline, pipeline_alive: Callable[[], bool]) -> None:
        """Start reporting on the running capture and pipeline."""
        self._capture, self._pipeline, self._pipeline_alive = capture, pipeline, pipeline_alive

    def add_condition(self, reasons: Callable[[], list[str]]) -> None:
        """Also report degraded while ``reasons()`` names anything (an output that cannot do its work)."""
        self._conditions.append(reasons)

    def degraded_reasons(self) -> list[str]:
        """What the added conditions name now (the parts database unreachable, ...)."""
        return [reason for condition in self._conditions for reason in condition()]

    def set_fault(self, source: str, reason: str) -> None:
        """Mark a part of the daemon broken (a socket's thread died): ``degraded`` until :meth:`clear_fault`."""
        with self._faults_lock:
            self._faults[source] = reason

    def clear_fault(self, source: str) -> None:
        """The part is working again."""
        with self._faults_lock:
            self._faults.pop(source, None)

    def faults(self) -> dict[str, str]:
        """What is broken now, by source, with the reason."""
        with self._faults_lock:
            return dict(self._faults)

    def record_undelivered(self, counts: dict[str, int]) -> None:
        """Frames captured but never handed to the pipeline at a failed shutdown (counted as dropped)."""
        self._undelivered = dict(counts)

    def camera_stats(self) -> dict[str, CameraStats]:
        """Capture counters per camera ({} before capture starts)."""
        return self._capture.stats() if self._capture is not None else {}

    def healthy(self) -> bool:
        """True while the pipeline thread runs and its current step is shorter than ``stall_timeout_s``."""
        if self._pipeline is None or not self._pipeline_alive():
            return False
        return self._pipeline.stalled_for_s() < self.config.worker.stall_timeout_s

    def worker_state(self) -> WorkerState:
        """starting, up, stalled (one step past ``stall_timeout_s``), down (failed), stopping or stopped."""
        pipeline = self._pipeline
        if pipeline is None:
            return "starting" if self.phase == "starting" else "stopped"
        if self._pipeline_alive():
            if pipeline.stalled_for_s() >= self.config.worker.stall_timeout_s:
                return "stalled"
            if self.phase == "starting":
                return "starting"  # started, waiting for the ready heartbeat before its first verdict
            return "stopping" if self.phase in STOP_PHASES else "up"
        return "stopped" if self.phase in STOP_PHASES and not self.pipeline_failed else "down"

    def state(self) -> DaemonState:
        """starting, ready, degraded (a camera down after a failure, the worker stalled or down, an output that
        cannot do its work, or a fault set with :meth:`set_fault`, e.g. a socket thread that died), stopping,
        stopped (a clean stop's end) or failed (a stop after a failure).

        A camera still opening its source for the first time (``starting``) or paused is not down.
        """
        if self.phase != "ready":
            return self.phase
        cameras_ok = all(st.state != "down" for st in self.camera_stats().values())
        healthy = (
            cameras_ok and self.worker_state() == "up" and not self.faults() and not self.degraded_reasons()
        )
        return "ready" if healthy else "degraded"

    def health(self) -> Health:
        """What ``/healthz`` (ready) and ``/livez`` (alive, as the systemd watchdog sees it) answer, and why."""
        state, worker = self.state(), self.worker_state()
        alive = worker not in WORKER_FAILURES
        if state == "ready":
            return Health(ready=True, alive=alive, reason="ready")
        if state != "degraded":
            return Health(ready=False, alive=alive, reason=f"{state}: {STATE_REASONS[state]}")
        problems = [
            f"camera {name} down" + (f": {st.last_error}" if st.last_error else "")
            for name, st in self.camera_stats().items()
            if st.state == "down"
        ]
        if worker == "stalled" and self._pipeline is not None:
            stalled_s, limit_s = self._pipeline.stalled_for_s(), self.config.worker.stall_timeout_s
            problems.append(
                f"model worker stalled for {stalled_s:.1f} s (worker.stall_timeout_s {limit_s:g})"
            )
        elif worker != "up":
            problems.append(f"model worker {worker}")
        problems += [f"{source}: {reason}" for source, reason in sorted(self.faults().items())]
        problems += self.degraded_reasons()
        return Health(ready=False, alive=alive, reason="degraded: " + "; ".join(problems))

    def sample_rates(self) -> None:
        """Record each camera's frame count now (call about once a second) for :meth:`fps`."""
        now = self._monotonic()
        for name, st in self.camera_stats().items():
            self._rates[name].append((now, st.captured))

    def fps(self, camera: str) -> float:
        """Frames per second a camera captured over the last samples (0 before two samples)."""
        samples = self._rates.get(camera)
        if not samples or len(samples) < 2 or samples[-1][0] <= samples[0][0]:
            return 0.0
        return (samples[-1][1] - samples[0][1]) / (samples[-1][0] - samples[0][0])

    def camera_report(self) -> dict[str, dict[str, Any]]:
        """Per camera, for the control socket: state, fps, trigger mode, frames waiting, last seq published."""
        stats = self.camera_stats()
        tally = self._ledger.tally()
        report: dict[str, dict[str, Any]] = {}
        for cam in self.config.cameras:
            st = stats.get(cam.name)
            report[cam.name] = {
                "state": st.state if st else "starting",
                "fps": round(self.fps(cam.name), 2),
                "trigger": cam.trigger,
                "queue_depth": _waiting(st) if st else 0,
                "last_seq": tally[cam.name].last_seq if cam.name in tally else None,
            }
        return report

    def daemon_report(self) -> dict[str, Any]:
        """The daemon as a whole, for the control socket: state, boot id, uptime, verdicts published."""
        return {
            "state": self.state(),
            "degraded": self.degraded_reasons(),
            "boot_id": self.boot_id,
            "uptime_s": round(self._monotonic() - self._started_at, 3),
            "frames_published": self._verdicts_published(),
            "faults": self.faults(),
        }

    def heartbeat(self) -> Heartbeat:
        """The current heartbeat message."""
        stats = self.camera_stats()
        tally = self._ledger.tally()
        cameras = {}
        for cam in self.config.cameras:
            st = stats.get(cam.name)
            last = tally[cam.name].last_seq if cam.name in tally else None
            cameras[cam.name] = CameraStatus(
                state=st.state if st else "starting",
                up=st.up if st else False,
                frames=st.captured if st else 0,
                last_seq=last,
            )
        worker = self.worker_state()
        return Heartbeat(
            boot_id=self.boot_id,
            published_at=rfc3339(self._wall()),
            state=self.state(),
            uptime_s=self._monotonic() - self._started_at,
            cameras=cameras,
            frames_published=self._verdicts_published(),
            worker=worker,
            worker_alive=worker in WORKER_ALIVE_STATES,
        )

    def status_line(self) -> str:
        """One-line summary for ``systemctl status`` (sd_notify STATUS=)."""
        stats = self.camera_stats()
        up = sum(1 for st in stats.values() if st.up)
        tally = self._ledger.tally().values()
        verdicts = {v: sum(t.published.get(v, 0) for t in tally) for v in VERDICTS}
        dropped = sum(sum(st.dropped_by_reason.values()) for st in stats.values())
        dropped += sum(sum(t.dropped.values()) for t in tally)
        counts = " ".join(f"{v} {n}" for v, n in verdicts.items())
        return (
            f"{self.state()}: {up}/{len(self.config.cameras)} cameras up, "
            f"{sum(verdicts.values())} verdicts ({counts}), {dropped} dropped"
        )

    def summary(self) -> dict[str, Any]:
        """Per-camera accounting: captured == published + dropped (capture and daemon side) + unaccounted."""
        stats = self.camera_stats()
        tally = self._ledger.tally()
        cameras: dict[str, Any] = {}
        for cam in self.config.cameras:
            st, t = stats.get(cam.name), tally.get(cam.name)
            if cam.trigger == "external":
                cameras[cam.name] = _external_summary(st, t)
                continue
            captured = st.captured if st else 0
            dropped = dict(st.dropped_by_reason) if st else {}
            for reason, n in (t.dropped if t else {}).items():
                dropped[reason] = dropped.get(reason, 0) + n
            if self._undelivered.get(cam.name):
                dropped[DROP_SHUTDOWN_TIMEOUT] = (
                    dropped.get(DROP_SHUTDOWN_TIMEOUT, 0) + self._undelivered[cam.name]
                )
            published = t.published if t else {}
            cameras[cam.name] = {
                "captured": captured,
                "published": sum(published.values()),
                "verdicts": published,
                "dropped": {r: n for r, n in dropped.items() if n},
                "unaccounted": captured - sum(published.values()) - sum(dropped.values()),
            }
        return {"cameras": cameras, "frames_published": self._verdicts_published()}


def _waiting(st: CameraStats) -> int:
    """Frames a camera captured that the pipeline has not taken yet."""
    return max(0, st.captured - st.delivered - sum(st.dropped_by_reason.values()))


def _external_summary(st: CameraStats | None, t: CameraTally | None) -> dict[str, Any]:
    """An external-trigger camera's accounting: triggers == published + dropped + unaccounted."""
    triggers = t.accepted if t else 0
    published = t.published if t else {}
    dropped = {r: n for r, n in (t.dropped if t else {}).items() if n}
    return {
        "captured": st.captured if st else 0,  # frames filmed; only triggered ones are inspected
        "triggers": triggers,
        "published": sum(published.values()),
        "verdicts": published,
        "dropped": dropped,
        "unaccounted": triggers - sum(published.values()) - sum(dropped.values()),
    }

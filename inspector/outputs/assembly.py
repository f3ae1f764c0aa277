"""The outputs of one daemon, built from its configuration: the sinks for the pipeline and the HTTP servers."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog

from inspector.bus.wire import Heartbeat
from inspector.config.archive import ARCHIVE_SUBDIR, ArchiveConfig
from inspector.config.root import InspectorConfig
from inspector.core.records import Outcome
from inspector.ops.metrics import InspectorMetrics
from inspector.outputs.archive import DefectArchive
from inspector.outputs.drift import DriftTracker, Reference
from inspector.outputs.http import HttpServer
from inspector.outputs.liveview import LiveView
from inspector.outputs.queued import QueuedSink
from inspector.outputs.results import ResultsApp
from inspector.outputs.ring import ResultsRing

STATE_DIRECTORY_ENV = "STATE_DIRECTORY"  # set by systemd from StateDirectory= (colon-separated when several)


class OutputSink(Protocol):
    """What the pipeline calls on each output (``inspector.daemon.sinks.Sink``)."""

    name: str

    def deliver(self, outcome: Outcome) -> None:
        """Take one outcome without blocking."""
        ...

    def close(self) -> None:
        """Finish and release resources."""
        ...


@dataclass(frozen=True)
class OutputContext:
    """What the outputs need from the daemon."""

    config: InspectorConfig
    boot_id: str
    metrics: InspectorMetrics
    status: Callable[[], Heartbeat]
    references: Mapping[str, Reference]
    env: Mapping[str, str]
    wall_clock: Callable[[], float] = time.time


def archive_root(config: ArchiveConfig, env: Mapping[str, str]) -> Path | None:
    """The archive's folder: ``directory``, else ``$STATE_DIRECTORY/archive`` under systemd, else none."""
    if not config.enabled:
        return None
    if config.directory is not None:
        return config.directory
    state = env.get(STATE_DIRECTORY_ENV, "").split(":")[0]
    return Path(state) / ARCHIVE_SUBDIR if state else None


class Outputs:
    """The drift tracker, the results ring, the live view and the archive, in the order they get outcomes.

    Each is a pipeline sink that never blocks it: drift, ring and live view keep a reference under a lock;
    the archive queues for its own thread. Images are encoded on the HTTP servers' render threads.
    """

    def __init__(self, ctx: OutputContext) -> None:
        """Build what the configuration enables (nothing is started or bound here)."""
        cfg, metrics = ctx.config, ctx.metrics
        cameras = [c.name for c in cfg.cameras]
        self._log = structlog.stdlib.get_logger(__name__)
        self.drift = DriftTracker(cfg.drift, ctx.references, metrics.outputs)
        self.archive: DefectArchive | None = None
        self._archive_sink: QueuedSink | None = None
        self.sinks: list[OutputSink] = [self.drift]
        self._servers: list[HttpServer] = []
        root = archive_root(cfg.archive, ctx.env)
        if root is None:
            self._log.info("archive_off", reason="disabled" if not cfg.archive.enabled else "no directory")
        else:
            self.archive = DefectArchive(root, cfg.archive, metrics.outputs, ctx.wall_clock)
            self._archive_sink = QueuedSink(
                "archive",
                self.archive.write,
                cfg.archive.queue_size,
                metrics.outputs,
                wants=self.archive.wants,
                idle=self.archive.enforce_retention,
                flush_timeout_s=cfg.archive.flush_timeout_s,
                on_error=lambda name: metrics.sink_errors.labels(sink=name).inc(),
                prepare=self.archive.open,
            )
        if cfg.results.enabled:
            ring = ResultsRing(cfg.results.ring_per_camera, cfg.results.ring_max_mb)
            self.sinks.append(ring)
            app = ResultsApp(cameras, ctx.boot_id, ring, self.archive, cfg.results.jpeg_quality)
            self._servers.append(
                HttpServer(
                    "results",
                    app.application(),
                    cfg.results.bind_address,
                    cfg.results.port,
                    cfg.results,
                    metrics.connections,
                )
            )
        if cfg.liveview.enabled:
            live = LiveView(cameras, cfg.liveview, ctx.status)
            self.sinks.append(live)
            self._servers.append(
                HttpServer(
                    "liveview",
                    live.application(),
                    cfg.liveview.bind_address,
                    cfg.liveview.port,
                    cfg.liveview,
                    metrics.connections,
                )
            )
        if self._archive_sink is not None:
            self.sinks.append(self._archive_sink)

    def start(self) -> dict[str, int]:
        """Start the archive's thread and bind the HTTP servers; returns the port of each server.

        Raises:
            OutputError: a server's address cannot be bound (what was started is stopped again).
        """
        if self._archive_sink is not None:
            self._archive_sink.start()
        ports = {}
        try:
            for server in self._servers:
                ports[server.section] = server.start()
        except Exception:
            self.close()
            raise
        return ports

    def update_gauges(self) -> None:
        """Drift statistics and the archive queue's depth (once a second, from the daemon)."""
        self.drift.update_gauges()
        if self._archive_sink is not None:
            self._archive_sink.update_gauges()

    def close(self) -> None:
        """Stop the HTTP servers, then flush the archive within its bound. Idempotent."""
        for server in self._servers:
            server.close()
        for sink in self.sinks:
            sink.close()

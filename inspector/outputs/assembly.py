"""The outputs of one daemon, built from its configuration: the sinks for the pipeline and the HTTP servers."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import structlog
from aiohttp import web

from inspector.bus.wire import Heartbeat
from inspector.config.archive import ARCHIVE_SUBDIR, ArchiveConfig
from inspector.config.root import InspectorConfig
from inspector.core.names import state_directory
from inspector.core.records import Outcome
from inspector.ops.metrics import InspectorMetrics
from inspector.outputs.archive import DefectArchive
from inspector.outputs.drift import DriftTracker, Reference
from inspector.outputs.http import HttpServer
from inspector.outputs.liveview import LiveView
from inspector.outputs.mqtt import MqttSink
from inspector.outputs.mqtt_commands import Handler
from inspector.outputs.parts import PartsRoutes, PartsSink, record_of
from inspector.outputs.queued import QueuedSink
from inspector.outputs.results import ResultsApp
from inspector.outputs.review import ReviewPage
from inspector.outputs.ring import ResultsRing
from inspector.outputs.sessions import Sessions, read_review_users
from inspector.records.audit import AuditEntry
from inspector.records.spool import Spool
from inspector.records.store import database_url, display_url, open_engine, spool_folder
from inspector.records.writer import PartsWriter

REVIEW_EXPORTS_SUBDIR = "review-exports"  # under $STATE_DIRECTORY when review.export_dir is not set
DAEMON_USER = "daemon"  # the audit trail's user for what the daemon did on a command (product change, reload)


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
    active_product: Callable[[str], str | None] = lambda _camera: None  # a camera's product now (MQTT state)


def archive_root(config: ArchiveConfig, env: Mapping[str, str]) -> Path | None:
    """The archive's folder: ``directory``, else ``$STATE_DIRECTORY/archive`` under systemd, else none."""
    if not config.enabled:
        return None
    if config.directory is not None:
        return config.directory
    state = state_directory(env)
    return Path(state) / ARCHIVE_SUBDIR if state else None


class Outputs:
    """The drift tracker, the parts database, the results ring, the live view, the archive and MQTT, in the
    order they get outcomes.

    Each is a pipeline sink that never blocks it: drift, ring and live view keep a reference under a lock;
    the parts writer, the archive and MQTT queue for their own threads. Images are encoded on the HTTP
    servers' render threads, the archive's thread and the MQTT sink's thread.
    """

    def __init__(self, ctx: OutputContext) -> None:
        """Build what the configuration enables (nothing is started or bound here)."""
        cfg, metrics = ctx.config, ctx.metrics
        self._parts_metrics = metrics.outputs.parts
        cameras = [c.name for c in cfg.cameras]
        self._log = structlog.stdlib.get_logger(__name__)
        self.drift = DriftTracker(cfg.drift, ctx.references, metrics.outputs)
        self.archive: DefectArchive | None = None
        self._archive_sink: QueuedSink | None = None
        self.sinks: list[OutputSink] = [self.drift]
        self._servers: list[HttpServer] = []
        root = archive_root(cfg.archive, ctx.env)
        self.parts_writer, routes = self._parts(ctx, archive_on=root is not None)
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
            application = app.application()
            if routes is not None:
                routes.register(application)
            self._servers.append(
                HttpServer(
                    "results",
                    application,
                    cfg.results.bind_address,
                    cfg.results.port,
                    cfg.results,
                    metrics.connections,
                )
            )
        if cfg.liveview.enabled:
            live = LiveView(cameras, cfg.liveview, ctx.status)
            self.sinks.append(live)
            application = live.application()
            self._review_page(ctx, root, application)
            self._servers.append(
                HttpServer(
                    "liveview",
                    application,
                    cfg.liveview.bind_address,
                    cfg.liveview.port,
                    cfg.liveview,
                    metrics.connections,
                )
            )
        if self._archive_sink is not None:
            self.sinks.append(self._archive_sink)
        self.mqtt: MqttSink | None = None
        if cfg.mqtt.enabled:
            self.mqtt = MqttSink(
                cfg.mqtt, cameras, ctx.status, ctx.active_product, metrics.outputs, wall_clock=ctx.wall_clock
            )
            self.sinks.append(self.mqtt)

    def _parts(self, ctx: OutputContext, archive_on: bool) -> tuple[PartsWriter | None, PartsRoutes | None]:
        """The parts database's writer and sink (the sink right after drift), and its HTTP routes."""
        cfg = ctx.config.parts
        url = database_url(cfg, ctx.env)
        if url is None:
            self._log.info("parts_database_off", reason="disabled" if not cfg.enabled else "no url")
            return None, None
        spool = Spool(spool_folder(cfg, ctx.env, url))
        writer = PartsWriter(cfg, url, spool, ctx.metrics.outputs.parts, convert=record_of)
        self.sinks.append(PartsSink(writer, archive_on))
        self._log.info("parts_database", url=display_url(url), spool=str(spool.folder))
        return writer, PartsRoutes(open_engine(cfg, url, create_folder=False), cfg)

    def _review_page(self, ctx: OutputContext, archive: Path | None, app: web.Application) -> None:
        """``/review`` on the live view's server when ``[review] enabled`` (and the parts database is on)."""
        cfg, r = ctx.config, ctx.config.review
        url = database_url(cfg.parts, ctx.env)
        if not r.enabled or url is None or r.users_file is None:
            return
        users = read_review_users(r.users_file)
        sessions = Sessions(users, r.session_idle_s, r.lockout_failures, r.lockout_s)
        state = state_directory(ctx.env)
        export_dir = r.export_dir or (Path(state) / REVIEW_EXPORTS_SUBDIR if state else None)
        engine = open_engine(cfg.parts, url, create_folder=False)
        failures = ctx.metrics.outputs.review_login_failures
        ReviewPage(sessions, engine, archive, export_dir, r.queue_limit, failures).register(app)

    def attach_commands(self, handle: Handler) -> None:
        """Let the outputs that take commands (MQTT, when ``commands_enabled``) act through the line commands."""
        if self.mqtt is not None:
            self.mqtt.attach_commands(handle)

    def audit(self, action: str, subject: str, detail: dict[str, Any]) -> None:
        """Append an entry to the audit trail (through the parts writer: spooled like any record when the
        database cannot take it); nothing when the parts database is off."""
        if self.parts_writer is not None:
            self.parts_writer.submit(AuditEntry(action, DAEMON_USER, subject, detail=detail))

    def degraded_reasons(self) -> list[str]:
        """Why an output is not doing its work now (the parts database unreachable, ...); empty when fine."""
        reason = self.parts_writer.degraded_reason if self.parts_writer is not None else None
        return [reason] if reason else []

    def start(self) -> dict[str, int]:
        """Start the parts writer's and the archive's threads and bind the HTTP servers; returns the port of
        each server.

        Raises:
            OutputError: a server's address cannot be bound (what was started is stopped again).
        """
        if self.parts_writer is not None:
            self.parts_writer.start()
        if self._archive_sink is not None:
            self._archive_sink.start()
        if self.mqtt is not None:
            self.mqtt.start()
        ports = {}
        try:
            for server in self._servers:
                ports[server.section] = server.start()
        except Exception:
            self.close()
            raise
        return ports

    def update_gauges(self) -> None:
        """Drift statistics and the archive's and MQTT's queue depths (once a second, from the daemon)."""
        self.drift.update_gauges()
        if self._archive_sink is not None:
            self._archive_sink.update_gauges()
        if self.mqtt is not None:
            self.mqtt.update_gauges()
        if self.parts_writer is not None:
            self._parts_metrics.queue_depth.set(self.parts_writer.depth)

    def close(self) -> None:
        """Stop the HTTP servers, then flush the queued outputs (archive, MQTT) within their bounds. Idempotent."""
        for server in self._servers:
            server.close()
        for sink in self.sinks:
            sink.close()

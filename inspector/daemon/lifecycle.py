"""Daemon lifecycle: start-up order and readiness, supervision, graceful drain and shutdown, as named steps."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

import structlog
import zmq
from prometheus_client import CollectorRegistry

from inspector import __version__
from inspector.bus.curve import CurveAuthenticator, load_curve_server
from inspector.bus.publisher import Publisher
from inspector.bus.wire import new_boot_id
from inspector.capture.manager import CaptureManager
from inspector.config.root import InspectorConfig
from inspector.core.budget import RestartBudget
from inspector.core.names import EXIT_FAILURE, EXIT_OK
from inspector.daemon.accounting import CaptureEvents, count_undelivered, update_gauges
from inspector.daemon.batching import Batcher
from inspector.daemon.early import EarlyHeartbeat
from inspector.daemon.heartbeat import Heartbeats
from inspector.daemon.ledger import DROP_SHUTDOWN_TIMEOUT, FrameLedger
from inspector.daemon.linecontrol import LineControl
from inspector.daemon.pipeline import DROP_PIPELINE_FAILED, Pipeline
from inspector.daemon.products import Loader, ProductRegistry
from inspector.daemon.sinks import BusSink
from inspector.daemon.startup import load_and_warm_up
from inspector.daemon.status import DaemonStatus
from inspector.daemon.supervision import WorkerSupervisor, stall_injector
from inspector.daemon.worker import ModelWorker
from inspector.ops.endpoint import MetricsServer
from inspector.ops.metrics import InspectorMetrics, start_http_server
from inspector.ops.sdnotify import SdNotifier, run_watchdog, watchdog_interval_s
from inspector.outputs.assembly import OutputContext, Outputs
from inspector.outputs.drift import Reference
from inspector.plc.sink import PlcSink

SUPERVISE_INTERVAL_S = 1.0
STATUS_INTERVAL_S = 5.0
CAPTURE_STOP_TIMEOUT_S = 5.0  # per camera process, within the overall shutdown_timeout_s
MIN_CAPTURE_STOP_S = 0.5
THREAD_JOIN_TIMEOUT_S = 5.0


class Daemon:
    """The inspection daemon: cameras in, verdicts out. Create, then call :meth:`run` (blocks until stopped).

    Start-up order: bind the bus and the metrics endpoint, load and validate every gallery, warm the model
    up, start the cameras and the pipeline (held at its gate); only then is the daemon ready: a ``ready``
    heartbeat is published, the gate opens (so no verdict precedes it), then ``READY=1`` and the log line.
    :meth:`request_stop` (from a signal handler or another thread) stops capture, lets the pipeline score and
    publish every accepted frame within ``shutdown_timeout_s`` (heartbeat ``stopping``), flushes the bus and
    returns 0 (last heartbeat ``stopped``, or ``failed`` with exit status 1); frames that could not finish
    are logged and counted as dropped (``shutdown_timeout``).
    """

    def __init__(
        self,
        config: InspectorConfig,
        context: zmq.Context[zmq.Socket[bytes]],
        registry: CollectorRegistry,
        notifier: SdNotifier,
        env: Mapping[str, str],
        wall_clock: Callable[[], float] = time.time,
        *,
        publisher: Publisher | None = None,
        early: EarlyHeartbeat | None = None,
    ) -> None:
        """Prepare the daemon; nothing is bound or started here (except a publisher passed in bound).

        Args:
            config: a configuration that passed ``inspector.config.load.run_problems``.
            context: ZeroMQ context (the caller terminates it after :meth:`run`).
            registry: Prometheus registry served on the metrics endpoint.
            notifier: systemd notifier (a no-op without ``NOTIFY_SOCKET``).
            env: environment, read for the systemd watchdog (``WATCHDOG_USEC``).
            wall_clock: Unix time for timestamps (camera processes use ``time.time``).
            publisher: the bus publisher, already bound by ``inspector run`` (default: one bound at start).
            early: the heartbeat sent while starting (``inspector run``); stopped when the daemon's own starts.
        """
        self.config = config
        self._early = early
        self.stop_event = threading.Event()
        self.ready_event = threading.Event()
        self.metrics = InspectorMetrics(registry, config.metrics.score_buckets, clock=wall_clock)
        sec = config.security
        self._curve = load_curve_server(sec.curve_server_secret_key, sec.curve_allowed_clients)
        # A publisher passed in was bound by the caller, who runs the context's ZAP handler (inspector run).
        self._auth = CurveAuthenticator(context, self._curve) if self._curve and publisher is None else None
        self.publisher = publisher or Publisher(
            config.bus, context, new_boot_id(), clock=wall_clock, curve=self._curve,
            cameras=[c.name for c in config.cameras],
        )  # fmt: skip
        self.boot_id = self.publisher.boot_id
        self.ledger = FrameLedger(self.metrics)
        self.status = DaemonStatus(
            config, self.boot_id, self.ledger, lambda: self.publisher.verdicts_published, wall_clock,
            started_at=early.started_at if early is not None else None,
        )  # fmt: skip
        self._heartbeats = Heartbeats(self.publisher, self.status, config.bus.heartbeat_interval_s)
        self.metrics_port: int | None = None
        self.exit_code = EXIT_OK
        self._registry = registry
        self._notifier = notifier
        self._env = env
        self._wall = wall_clock
        self._context = context
        self._loader: Loader | None = None
        self.line: LineControl | None = None
        self._capture_stop = threading.Event()
        self._capture: CaptureManager | None = None
        self._pipeline: Pipeline | None = None
        self._workers: WorkerSupervisor | None = None
        self._threads: dict[str, threading.Thread] = {}
        self._gate = threading.Event()  # opens right after the first ready heartbeat: no verdict before it
        self._aux_stop = threading.Event()
        self._metrics_server: MetricsServer | None = None
        self._outputs: Outputs | None = None
        self._plc: PlcSink | None = None
        self.output_ports: dict[str, int] = {}
        self._log = structlog.stdlib.get_logger(__name__).bind(boot_id=self.boot_id)

    # ------------------------------------------------------------------------------------------ lifecycle

    def request_stop(self, reason: str = "requested") -> None:
        """Ask the daemon to stop gracefully (safe from signal handlers and other threads)."""
        if not self.stop_event.is_set():
            self._log.info("stop_requested", reason=reason)
        self.stop_event.set()

    def run(self) -> int:
        """Start, serve until stopped, shut down. Returns the exit status (0, or 1 if the pipeline died).

        Raises:
            Exception: start-up failures (gallery, backbone, bind errors) after releasing what was started.
        """
        try:
            self._start()
        except BaseException as exc:
            self._log.error("startup_failed", error=str(exc), error_type=type(exc).__name__)
            self.status.phase = "failed"
            if self.line is not None:
                self.line.stop()
            self._capture_stop.set()
            if self._capture is not None:
                self._capture.stop(CAPTURE_STOP_TIMEOUT_S)
            self._close_outputs()
            raise
        if self.ready_event.is_set():
            self._supervise()
        return self._shutdown()

    def _start(self) -> None:
        cfg = self.config
        self._log.info("daemon_starting", version=__version__, cameras=[c.name for c in cfg.cameras])
        self.metrics.set_build_info(__version__)
        for cam in cfg.cameras:
            self.metrics.init_camera(cam.name)
        if self._auth is not None:  # ZAP first: no socket may accept a client it has not checked
            self._auth.start()
        endpoint = self.publisher.endpoint or self.publisher.bind()
        self._log.info("bus_bound", endpoint=endpoint, curve=self._curve is not None)
        if cfg.metrics.enabled:
            self._metrics_server, self.metrics_port = start_http_server(
                cfg.metrics, self._registry, self.status.health, self.metrics.connections
            )
            self._log.info("metrics_listening", address=cfg.metrics.bind_address, port=self.metrics_port)
        if self._early is not None:
            self._early.stop()
        self._spawn("heartbeat", lambda: self._heartbeats.run(self._aux_stop))
        self._loader, products = load_and_warm_up(self.config, self.stop_event, self._log)
        if self.stop_event.is_set():
            return
        self._start_outputs(products)
        self._start_capture(products)
        self._become_ready(endpoint)

    # ------------------------------------------------------------------------------------------ outputs
    # The outputs after the bus (archive, results endpoint, live view, drift): built and started in one
    # step before capture, handed to the pipeline as its sinks, stopped in one step at the end.

    def _start_outputs(self, products: ProductRegistry) -> None:
        references = {
            c.name: Reference(*products.calibration_of(products.active(c.name))) for c in self.config.cameras
        }
        context = OutputContext(
            self.config, self.boot_id, self.metrics, self.status.heartbeat, references, self._env, self._wall,
            active_product=products.active,
        )  # fmt: skip
        self._outputs = Outputs(context)
        products.listen(self._outputs.audit)
        self.status.add_condition(self._outputs.degraded_reasons)
        self.output_ports = self._outputs.start()
        for section, port in self.output_ports.items():
            self._log.info("output_listening", section=section, port=port)

    def _start_plc(self) -> PlcSink | None:
        """The OPC UA server when ``[opcua] enabled``: its methods are the line control's commands."""
        cfg = self.config
        if not cfg.opcua.enabled or self.line is None:
            return None
        cameras = [c.name for c in cfg.cameras]
        self._plc = PlcSink(
            cfg.opcua,
            cameras,
            self.line.commands.handle,
            self.status.heartbeat,
            cfg.bus.heartbeat_interval_s,
            self._registry,
        )
        self.output_ports["opcua"] = port = self._plc.start()
        self._log.info("output_listening", section="opcua", address=cfg.opcua.bind_address, port=port)
        return self._plc

    def _stop_outputs(self) -> None:
        if self._plc is not None:
            self._plc.close()
            self._plc = None
        if self._outputs is not None:
            self._outputs.close()
            self._outputs = None

    def _start_capture(self, products: ProductRegistry) -> None:
        cfg = self.config
        assert self._loader is not None  # set by load_and_warm_up
        budget = (cfg.supervision.restart_budget, cfg.supervision.restart_window_s)
        self._capture = CaptureManager(
            cfg.cameras, self._capture_stop, on_event=CaptureEvents(self.metrics), restart_budget=budget
        )
        self._capture.start()
        self.metrics.children.watch(self._child_pids)
        self.line = LineControl(
            cfg, self._context, self._capture, products, self.status, self.metrics, self._loader, self._curve,
            self._env,
        )  # fmt: skip
        if self._outputs is not None:  # MQTT commands (when enabled) are the control socket's commands
            self._outputs.attach_commands(self.line.commands.handle)
        batcher = Batcher(cfg.batching)
        bus = BusSink(self.publisher, self.metrics)
        sinks = list(self._outputs.sinks) if self._outputs is not None else []
        plc = self._start_plc()
        if plc is not None:
            sinks.append(plc)
        parts, stall = self.line.parts, stall_injector(self._env)

        def make_pipeline() -> Pipeline:
            worker = ModelWorker(products, before_score=stall)
            return Pipeline(parts, batcher, worker, bus, self.ledger, self.metrics, sinks, gate=self._gate)

        self._pipeline = make_pipeline()
        self._workers = WorkerSupervisor(
            self._pipeline, make_pipeline, self._start_pipeline, cfg.worker.stall_timeout_s,
            RestartBudget(*budget), self.metrics,
        )  # fmt: skip
        self.status.attach(self._capture, self._pipeline, lambda: self._pipeline_alive)
        self._start_pipeline(self._pipeline)
        for section, endpoint in self.line.start().items():
            self._log.info(f"{section}_bound", endpoint=endpoint)

    def _become_ready(self, endpoint: str) -> None:
        self._heartbeats.send("ready")  # on the bus before any verdict
        self._gate.set()
        self.metrics.set_ready(True)
        self._log.info(
            "daemon_ready", bus=endpoint, metrics_port=self.metrics_port, cameras=len(self.config.cameras)
        )
        self.ready_event.set()  # before READY=1: whoever hears READY=1 finds the event set
        self._notifier.ready()
        self._notifier.status(self.status.status_line())
        interval = watchdog_interval_s(self._env)
        if interval is not None:
            self._spawn(
                "watchdog",
                lambda: run_watchdog(self._notifier, interval, self.status.healthy, self._aux_stop),
            )

    def request_reload(self) -> None:
        """Reload every product's gallery (SIGHUP; safe from signal handlers): files that fail are refused."""
        if self.line is not None:
            self.line.request_reload()

    def _supervise(self) -> None:
        last_status = time.monotonic()
        while not self.stop_event.wait(SUPERVISE_INTERVAL_S):
            if self._check_children():
                break
            self._update_gauges()
            self.status.sample_rates()
            if self.line is not None:
                self.line.service()
            if time.monotonic() - last_status >= STATUS_INTERVAL_S:
                last_status = time.monotonic()
                self._notifier.status(self.status.status_line())

    def _check_children(self) -> bool:
        """Replace a stuck worker; True (exit status 1, stop requested) once a restart budget is spent."""
        if self._workers is not None:
            self._workers.check(self._threads.get("pipeline"))
        exhausted = (self._capture.exhausted if self._capture else None) or (
            self._workers.exhausted if self._workers else None
        )
        if exhausted is None:
            return False
        if self._capture is not None and self._capture.exhausted_camera is not None:
            self.metrics.restart_budget_exhausted.labels(
                kind="camera", name=self._capture.exhausted_camera
            ).inc()
        self._log.critical("restart_budget_exhausted", reason=exhausted, exit_status=EXIT_FAILURE)
        self.exit_code = EXIT_FAILURE
        self.request_stop("restart budget exhausted")
        return True

    def _shutdown(self) -> int:
        started = time.monotonic()
        deadline = started + self.config.shutdown_timeout_s
        self.status.phase = "stopping"
        self.metrics.set_ready(False)
        self._notifier.stopping()
        self._notifier.status("stopping: finishing accepted frames")
        self._log.info(
            "daemon_stopping",
            shutdown_timeout_s=self.config.shutdown_timeout_s,
            accepted_in_flight=self.ledger.outstanding,
        )
        if self.line is not None:
            self.line.stop()  # no more triggers; the waiting ones become ERROR verdicts
        self._capture_stop.set()
        if self._pipeline is not None:
            self._pipeline.draining.set()
        if self._capture is not None:
            per_camera = min(CAPTURE_STOP_TIMEOUT_S, max(MIN_CAPTURE_STOP_S, deadline - time.monotonic()))
            self._capture.stop(per_camera)
        if self._pipeline is not None:
            self._pipeline.input_closed.set()
        pipeline = self._threads.get("pipeline")
        if pipeline is not None:
            pipeline.join(max(0.0, deadline - time.monotonic()))
        self._account_unfinished(pipeline is not None and pipeline.is_alive())
        self._update_gauges()
        self.status.phase = "stopped" if self.exit_code == EXIT_OK else "failed"  # the last heartbeat says it
        self._close_outputs()
        self._log.info(
            "daemon_stopped", seconds=round(time.monotonic() - started, 3), **self.status.summary()
        )
        return self.exit_code

    def _account_unfinished(self, pipeline_alive: bool) -> None:
        if self._pipeline is not None and not pipeline_alive:
            self._pipeline.abandon_queued(DROP_PIPELINE_FAILED)
        lost = self.ledger.abandon(DROP_SHUTDOWN_TIMEOUT if pipeline_alive else DROP_PIPELINE_FAILED)
        for frame in lost:
            self._log.error("frame_unfinished_at_shutdown", camera=frame.camera, seq=frame.seq)
        undelivered = count_undelivered(self.config, self._capture, self.metrics)
        self.status.record_undelivered(undelivered)
        if lost or undelivered:
            self._log.error(
                "shutdown_incomplete",
                unfinished=len(lost),
                undelivered=undelivered,
                shutdown_timeout_s=self.config.shutdown_timeout_s,
            )

    def _close_outputs(self) -> None:
        self._stop_outputs()
        self._aux_stop.set()
        for name in ("heartbeat", "watchdog"):
            thread = self._threads.get(name)
            if thread is not None:
                thread.join(THREAD_JOIN_TIMEOUT_S)
        self.publisher.close()
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._metrics_server is not None:
            self._metrics_server.close()
            self._metrics_server = None
        self.metrics.up.set(0)

    # ------------------------------------------------------------------------------------------ threads

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads[name] = thread
        thread.start()

    def _start_pipeline(self, pipeline: Pipeline) -> threading.Thread:
        """Run a pipeline on the thread named "pipeline" (a replacement takes the name over)."""
        self._pipeline = pipeline
        if self._capture is not None:
            self.status.attach(self._capture, pipeline, lambda: self._pipeline_alive)
        self._spawn("pipeline", lambda: self._pipeline_main(pipeline))
        return self._threads["pipeline"]

    def _pipeline_main(self, pipeline: Pipeline) -> None:
        try:
            pipeline.run()
        except Exception:  # noqa: BLE001 - logged, then the daemon stops with exit status 1
            self._log.critical("pipeline_failed", exc_info=True)
            self.status.pipeline_failed = True
            self.exit_code = EXIT_FAILURE
            self.request_stop("pipeline failed")

    # ------------------------------------------------------------------------------------------ state

    @property
    def _pipeline_alive(self) -> bool:
        thread = self._threads.get("pipeline")
        return thread is not None and thread.is_alive()

    @property
    def pipeline_running(self) -> bool:
        """True while a pipeline thread is alive (after :meth:`run` only when a model call hung)."""
        stuck = self._workers is not None and self._workers.stuck_alive()
        return self._pipeline_alive or stuck

    def _child_pids(self) -> dict[tuple[str, str], int]:
        """The camera processes running now, for the child CPU and memory metrics."""
        if self._capture is None:
            return {}
        pids = {("camera", c.name): self._capture.pid(c.name) for c in self.config.cameras}
        return {key: pid for key, pid in pids.items() if pid is not None}

    def _update_gauges(self) -> None:
        update_gauges(self.metrics, self.config, self._pipeline, self._capture, self._wall)
        self.metrics.record_bus(self.publisher.subscriptions_refused, self.publisher.subscribers_dropped)
        if self._outputs is not None:
            self._outputs.update_gauges()

"""Daemon subcommands: ``run --config FILE``, ``check-config FILE``, ``tail`` and ``proxy``."""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from inspector.cli.checks import daemon_problems, outputs_line
from inspector.config.load import ConfigError, load_run_config
from inspector.config.proxy import DEFAULT_HWM
from inspector.config.root import InspectorConfig
from inspector.core.names import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK

if TYPE_CHECKING:  # zmq loads only in the commands that use it
    import zmq

    from inspector.bus.curve import CurveClient, CurveServer
    from inspector.bus.publisher import Publisher
    from inspector.daemon.early import EarlyHeartbeat
    from inspector.ops.sdnotify import SdNotifier

SubParsers = argparse._SubParsersAction  # argparse exposes no public name for it
LOG_LEVELS = ("debug", "info", "warning", "error")


def add_daemon_commands(subparsers: SubParsers[argparse.ArgumentParser]) -> None:
    """Register ``run``, ``check-config``, ``tail`` and ``proxy`` on the CLI's subparsers.

    A bad configuration raises :class:`~inspector.config.load.ConfigError`, which ``inspector.cli.main``
    turns into exit status 78 with one line per problem naming the field.
    """
    run = subparsers.add_parser("run", help="run the inspection daemon (cameras in, verdicts on ZeroMQ)")
    run.add_argument("--config", type=Path, required=True, help="TOML configuration file")
    run.set_defaults(func=cmd_run)

    check = subparsers.add_parser("check-config", help="validate a daemon configuration without starting")
    check.add_argument("file", type=Path, help="TOML configuration file")
    check.set_defaults(func=cmd_check_config)

    tail = subparsers.add_parser("tail", help="subscribe to the verdict bus and print verdicts")
    tail.add_argument("--connect", required=True, help="PUB endpoint, e.g. tcp://127.0.0.1:5556")
    tail.add_argument(
        "--topic", action="append", dest="topics",
        help="subscription prefix (repeatable); default verdict. (all cameras)",
    )  # fmt: skip
    tail.add_argument("--count", type=int, default=None, help="exit after N verdicts")
    tail.add_argument("--json", action="store_true", help="print one JSON object per line")
    tail.add_argument(
        "--max-age-ms", type=float, default=2000.0,
        help="warn (stale) on a verdict older than this on arrival: the line's budget (default 2000)",
    )  # fmt: skip
    add_curve_client_options(tail)
    tail.set_defaults(func=cmd_tail)

    add_ctl_command(subparsers)

    proxy = subparsers.add_parser(
        "proxy", help="forward several daemons' verdict buses to one endpoint (ZeroMQ XSUB/XPUB)"
    )
    proxy.add_argument(
        "--frontend", action="append", required=True, metavar="ADDR",
        help="a daemon's bus endpoint to connect to (its bus.bind address); repeat for each daemon",
    )  # fmt: skip
    proxy.add_argument(
        "--backend",
        required=True,
        metavar="ADDR",
        help="endpoint to bind for consumers, e.g. tcp://0.0.0.0:5550",
    )
    proxy.add_argument("--hwm", type=int, default=DEFAULT_HWM, help="socket high-water mark in messages")
    proxy.add_argument("--log-level", default="info", choices=LOG_LEVELS, help="lowest log level written")
    add_curve_client_options(proxy)
    add_curve_backend_options(proxy)
    proxy.set_defaults(func=cmd_proxy)


CTL_TIMEOUT_S = 60.0  # a reload loads and validates galleries: seconds, more on a busy CPU


def add_ctl_command(subparsers: SubParsers[argparse.ArgumentParser]) -> None:
    """Register ``inspector ctl``: one request to a running daemon's control socket, the answer as JSON."""
    ctl = subparsers.add_parser("ctl", help="send one request to a running daemon's control socket")
    ctl.add_argument(
        "--connect", required=True, help="control endpoint (control.bind), e.g. tcp://127.0.0.1:5561"
    )
    ctl.add_argument("--timeout-s", type=float, default=CTL_TIMEOUT_S, help="seconds to wait for the answer")
    cmds = ctl.add_subparsers(
        dest="ctl_command", required=True, metavar="{status,trigger,product,reload,pause,resume}"
    )
    cmds.add_parser("status", help="cameras, products, uptime and boot id")
    trigger = cmds.add_parser("trigger", help="inspect the next part in front of an external-trigger camera")
    trigger.add_argument("camera", help="camera name")
    trigger.add_argument("part_id", help="the part's id, carried by its verdict")
    trigger.add_argument("--product", default=None, help="switch the camera to this product first")
    trigger.add_argument("--at", default=None, help="RFC 3339 time of the trigger (default: now)")
    product = cmds.add_parser("product", help="switch a camera to a product (from its next frame on)")
    product.add_argument("camera", help="camera name")
    product.add_argument("product", help="product name")
    reload = cmds.add_parser(
        "reload", help="re-read gallery files; a file that fails is refused, the old one kept"
    )
    reload.add_argument("product", nargs="?", default=None, help="only this product (default: every product)")
    for name, text in (
        ("pause", "stop a camera capturing (not a fault)"),
        ("resume", "let a paused camera capture again"),
    ):
        p = cmds.add_parser(name, help=text)
        p.add_argument("camera", help="camera name")
    add_curve_client_options(ctl)
    ctl.set_defaults(func=cmd_ctl)


def add_curve_client_options(parser: argparse.ArgumentParser) -> None:
    """``--curve-client-key`` and ``--curve-server-key``: connect as a CURVE client (both, or neither)."""
    parser.add_argument(
        "--curve-client-key", type=Path, default=None, metavar="FILE",
        help="this client's CURVE secret key file (NAME.key_secret, inspector keys generate --curve)",
    )  # fmt: skip
    parser.add_argument(
        "--curve-server-key", type=Path, default=None, metavar="FILE",
        help="the daemon's CURVE public key file (its NAME.key)",
    )  # fmt: skip


def add_curve_backend_options(parser: argparse.ArgumentParser) -> None:
    """The proxy's consumer side: its own CURVE secret key and the consumers allowed."""
    parser.add_argument(
        "--curve-backend-key", type=Path, default=None, metavar="FILE",
        help="serve the backend with CURVE: the proxy's secret key file (NAME.key_secret)",
    )  # fmt: skip
    parser.add_argument(
        "--curve-allow", type=Path, action="append", default=[], metavar="FILE",
        help="a consumer's CURVE public key file allowed on the backend (repeatable)",
    )  # fmt: skip


def curve_client(args: argparse.Namespace) -> CurveClient | None:
    """The CURVE client of the command-line options (None without them).

    Raises:
        KeyFileError: only one of the two options, or a key file that cannot be used.
    """
    from inspector.bus.curve import client_setup

    return client_setup(args.curve_client_key, args.curve_server_key)


def curve_backend(args: argparse.Namespace) -> CurveServer | None:
    """The proxy's CURVE server identity (None without ``--curve-backend-key``).

    Raises:
        KeyFileError: a key file cannot be used, or keys given without the other half.
    """
    from inspector.bus.curve import load_curve_server
    from inspector.core.keyfiles import KeyFileError

    if args.curve_backend_key is None and args.curve_allow:
        raise KeyFileError(args.curve_allow[0], "--curve-allow needs --curve-backend-key")
    if args.curve_backend_key is not None and not args.curve_allow:
        raise KeyFileError(args.curve_backend_key, "--curve-backend-key needs at least one --curve-allow")
    return load_curve_server(args.curve_backend_key, args.curve_allow)


def cmd_ctl(args: argparse.Namespace) -> int:
    """Send the request, print the answer as JSON; exit 0 when it says ok, 1 otherwise."""
    import json

    import zmq

    from inspector.bus.control import ControlError, request

    payload = {"cmd": args.ctl_command}
    for key in ("camera", "part_id", "product", "at"):
        if getattr(args, key, None) is not None:
            payload[key] = getattr(args, key)
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        answer = request(context, args.connect, payload, args.timeout_s, curve_client(args))
    except ControlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        context.term()
    print(json.dumps(answer, indent=2))
    return EXIT_OK if answer.get("ok") else EXIT_FAILURE


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate a configuration as ``run`` would (fields, cameras, gallery files and settings); print a summary."""
    config = load_run_config(args.file)
    problems = daemon_problems(config, opcua=True)
    if problems:
        raise ConfigError(str(args.file), problems)
    cameras = ", ".join(
        f"{c.name} ({c.resolved_kind()} {c.source}, {c.trigger}, product {config.product_for(c)})"
        for c in config.cameras
    )
    galleries = [f"{name} = {path}" for name, path in sorted(config.product_galleries().items())]
    metrics = (
        f"http://{config.metrics.bind_address}:{config.metrics.port}/metrics"
        if config.metrics.enabled
        else "off"
    )
    print(f"{args.file}: OK")
    print(f"  cameras: {cameras}")
    print(f"  products: {', '.join(galleries)}")
    print(f"  bus: {config.bus.bind}  metrics: {metrics}")
    print(f"  {outputs_line(config)}")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    """Run the daemon until SIGTERM/SIGINT; 0 after a clean stop (a second Ctrl-C exits at once).

    The bus is bound and a ``starting`` heartbeat runs before PyTorch is imported (the gallery check and the
    daemon load it), so the bus is not silent for the seconds the imports take.
    """
    started_at = time.monotonic()
    config = load_run_config(args.config)

    import zmq

    from inspector.bus.curve import CurveAuthenticator, load_curve_server
    from inspector.bus.publisher import Publisher, PublisherError
    from inspector.bus.wire import new_boot_id
    from inspector.daemon.early import EarlyHeartbeat
    from inspector.ops.logs import configure_logging
    from inspector.ops.sdnotify import SdNotifier

    configure_logging(config.logging.level, config.logging.format)
    try:
        notifier = SdNotifier(os.environ)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    sec = config.security
    curve = load_curve_server(sec.curve_server_secret_key, sec.curve_allowed_clients)
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    auth = CurveAuthenticator(context, curve) if curve is not None else None  # serves every socket of context
    publisher = Publisher(
        config.bus, context, new_boot_id(), curve=curve, cameras=[c.name for c in config.cameras]
    )
    early = EarlyHeartbeat(publisher, config, started_at)
    try:
        if auth is not None:
            auth.start()
        publisher.bind()
        early.start()
        code = _run_daemon(args, config, context, publisher, early, notifier)
    except PublisherError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = EXIT_FAILURE
    finally:
        early.stop()
        publisher.close()  # a no-op after the daemon closed it
        if auth is not None:
            auth.stop()
        notifier.close()
        context.term()  # waits up to bus.linger_ms for queued verdicts to reach subscribers
    return code


def _run_daemon(
    args: argparse.Namespace,
    config: InspectorConfig,
    context: zmq.Context[zmq.Socket[bytes]],
    publisher: Publisher,
    early: EarlyHeartbeat,
    notifier: SdNotifier,
) -> int:
    """Check the galleries, then run the daemon on the bound publisher (the heavy imports happen here)."""
    problems = daemon_problems(config, opcua=config.opcua.enabled)
    if problems:
        raise ConfigError(str(args.config), problems)

    from prometheus_client import CollectorRegistry

    from inspector.bus.publisher import PublisherError
    from inspector.capture.shared import CameraRefusedError, CaptureError
    from inspector.daemon.lifecycle import Daemon
    from inspector.model.backbone import BackboneError
    from inspector.model.engine import EngineError
    from inspector.model.header import GalleryError
    from inspector.ops.endpoint import MetricsError
    from inspector.ops.signals import capture_signals
    from inspector.outputs.http import OutputError
    from inspector.outputs.mqtt_client import MqttConfigError

    daemon = Daemon(
        config, context, CollectorRegistry(), notifier, os.environ, publisher=publisher, early=early
    )
    try:
        with capture_signals(daemon.request_stop, on_reload=daemon.request_reload):
            code = daemon.run()
    except (PublisherError, MetricsError, CaptureError, OutputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = EXIT_FAILURE
    except (GalleryError, EngineError, BackboneError, CameraRefusedError, MqttConfigError) as exc:
        # a gallery refused for any reason (bytes, hash, values, signature, calibration), missing weights,
        # an unusable device, a camera refusing its settings, an [mqtt] file changed since the check: fixed by an engineer, not by a restart
        # (systemd does not restart on 78)
        print(f"error: {exc}", file=sys.stderr)
        code = EXIT_CONFIG
    if daemon.pipeline_running:
        # A hung model call cannot be interrupted; everything it held is already counted and logged.
        early.stop()
        notifier.close()
        context.term()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def cmd_tail(args: argparse.Namespace) -> int:
    """``inspector tail``: print the bus until ``--count`` verdicts, SIGTERM or Ctrl-C."""
    import zmq

    from inspector.bus.tail import tail
    from inspector.bus.wire import VERDICT_TOPIC_PREFIX
    from inspector.ops.signals import capture_signals

    stop = threading.Event()
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        with capture_signals(lambda _name: stop.set()):
            topics = args.topics or [VERDICT_TOPIC_PREFIX]
            return tail(
                args.connect, context, sys.stdout, args.count, topics, stop,
                as_json=args.json, max_age_ms=args.max_age_ms, curve=curve_client(args),
            )  # fmt: skip
    except BrokenPipeError:
        # The reader closed the pipe (inspector tail | head): nothing is lost, so end quietly with status 0;
        # stdout goes to /dev/null so the interpreter's last flush of it raises nothing either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    finally:
        context.term()


def cmd_proxy(args: argparse.Namespace) -> int:
    """``inspector proxy``: forward until SIGTERM or SIGINT; returns the exit status."""
    import zmq
    from pydantic import ValidationError

    from inspector.bus.proxy import serve
    from inspector.config.proxy import ProxyConfig
    from inspector.core.errors import validation_lines
    from inspector.ops.logs import configure_logging
    from inspector.ops.sdnotify import SdNotifier
    from inspector.ops.signals import capture_signals

    configure_logging(args.log_level, "auto")
    try:
        config = ProxyConfig(frontends=tuple(args.frontend), backend=args.backend, hwm=args.hwm)
    except ValidationError as exc:
        for line in validation_lines(exc):
            print(f"proxy: {line}", file=sys.stderr)
        return EXIT_CONFIG
    stop = threading.Event()
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        client, server = curve_client(args), curve_backend(args)
        with SdNotifier(os.environ) as notifier, capture_signals(lambda _name: stop.set()):
            return serve(config, context, stop, notifier, client, server)
    finally:
        context.term()

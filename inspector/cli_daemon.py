"""Daemon subcommands of the CLI: ``run --config FILE``, ``check-config FILE`` and ``tail``."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from types import FrameType

EXIT_OK = 0
EXIT_FAILURE = 1

SubParsers = argparse._SubParsersAction  # argparse exposes no public name for it


def add_daemon_commands(subparsers: SubParsers[argparse.ArgumentParser]) -> None:
    """Register ``run``, ``check-config`` and ``tail`` on the CLI's subparsers.

    A bad configuration raises ``inspector.config.ConfigError``, which ``inspector.cli.main`` turns into
    exit status 78 with one line per problem naming the field.
    """
    from inspector.tail import add_tail_arguments, run_tail

    run = subparsers.add_parser("run", help="run the inspection daemon (cameras in, verdicts on ZeroMQ)")
    run.add_argument("--config", type=Path, required=True, help="TOML configuration file")
    run.set_defaults(func=cmd_run)

    check = subparsers.add_parser("check-config", help="validate a daemon configuration without starting")
    check.add_argument("file", type=Path, help="TOML configuration file")
    check.set_defaults(func=cmd_check_config)

    tail = subparsers.add_parser("tail", help="subscribe to the verdict bus and print verdicts")
    add_tail_arguments(tail)
    tail.set_defaults(func=run_tail)


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate a configuration as ``run`` would (fields, cameras, gallery files) and print a summary."""
    from inspector.config import load_run_config

    config = load_run_config(args.file)
    cameras = ", ".join(f"{c.name} ({c.resolved_kind()} {c.source})" for c in config.cameras)
    galleries = sorted({str(config.gallery_for(c)) for c in config.cameras})
    metrics = (
        f"http://{config.metrics.bind_address}:{config.metrics.port}/metrics"
        if config.metrics.enabled
        else "off"
    )
    print(f"{args.file}: OK")
    print(f"  cameras: {cameras}")
    print(f"  galleries: {', '.join(galleries)}")
    print(f"  bus: {config.bus.bind}  metrics: {metrics}")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    """Run the daemon until SIGTERM/SIGINT; 0 after a clean stop."""
    from inspector.config import load_run_config

    config = load_run_config(args.config)

    import zmq
    from prometheus_client import CollectorRegistry

    from inspector.app import Daemon
    from inspector.capture import CaptureError
    from inspector.logs import configure_logging
    from inspector.metrics import MetricsError
    from inspector.publisher import PublisherError
    from inspector.sdnotify import SdNotifier

    configure_logging(config.logging.level, config.logging.format)
    try:
        notifier = SdNotifier(os.environ)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    daemon = Daemon(config, context, CollectorRegistry(), notifier, os.environ)

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        daemon.request_stop(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = daemon.run()
    except (PublisherError, MetricsError, CaptureError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = EXIT_FAILURE
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        notifier.close()
        context.term()  # waits up to bus.linger_ms for queued verdicts to reach subscribers
    if daemon.pipeline_running:
        # A hung model call cannot be interrupted; everything it held is already counted and logged.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code

"""``inspector opcua --config FILE`` (the OPC UA server beside a daemon) and ``inspector opcua hash-password``."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import threading
from pathlib import Path

from inspector.cli.daemon import LOG_LEVELS, SubParsers, add_curve_client_options, curve_client
from inspector.config.load import load_config
from inspector.core.names import EXIT_FAILURE, EXIT_OK

PASSWORD_ENV = "INSPECTOR_OPCUA_PASSWORD"  # read instead of a prompt (scripts, tests)


def add_opcua_commands(subparsers: SubParsers[argparse.ArgumentParser]) -> None:
    """Register ``opcua`` (serve) and ``opcua hash-password`` on the CLI's subparsers."""
    opcua = subparsers.add_parser(
        "opcua", help="serve the daemon's results, state and commands over OPC UA (for PLCs and SCADA)"
    )
    opcua.add_argument("--config", type=Path, help="the daemon's TOML configuration ([opcua], bus, control)")
    opcua.add_argument("--bus", help="the daemon's bus endpoint (default: from bus.bind)")
    opcua.add_argument("--control", help="the daemon's control endpoint (default: from control.bind)")
    opcua.add_argument("--log-level", default="info", choices=LOG_LEVELS, help="lowest log level written")
    add_curve_client_options(opcua)
    opcua.set_defaults(func=cmd_opcua)
    sub = opcua.add_subparsers(dest="opcua_command", metavar="SUBCOMMAND")
    hashing = sub.add_parser(
        "hash-password",
        help="print a users-file line for NAME (password from a prompt or $" + PASSWORD_ENV + ")",
    )
    hashing.add_argument("name", help="the OPC UA user name")
    hashing.set_defaults(func=cmd_hash_password)


def cmd_hash_password(args: argparse.Namespace) -> int:
    """Print ``NAME = "pbkdf2_sha256$..."`` for the ``[users]`` table of ``opcua.users_file``."""
    from inspector.plc.users import hash_password

    password = os.environ.get(PASSWORD_ENV)
    if password is None:
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            print("error: the passwords differ", file=sys.stderr)
            return EXIT_FAILURE
    print(f'{args.name} = "{hash_password(password)}"')
    return EXIT_OK


def cmd_opcua(args: argparse.Namespace) -> int:
    """Serve OPC UA until SIGTERM or SIGINT (``READY=1`` to systemd once it listens)."""
    if args.config is None:
        print("error: inspector opcua needs --config FILE (the daemon's configuration)", file=sys.stderr)
        return EXIT_FAILURE
    config = load_config(args.config)

    import zmq

    from inspector.ops.logs import configure_logging
    from inspector.ops.sdnotify import SdNotifier
    from inspector.ops.signals import capture_signals
    from inspector.plc.bridge import endpoints_of, run_bridge

    configure_logging(args.log_level, config.logging.format)
    endpoints = endpoints_of(config, args.bus, args.control)
    curve = curve_client(args)
    stop = threading.Event()
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        with SdNotifier(os.environ) as notifier, capture_signals(lambda _name: stop.set()):
            run_bridge(config, context, stop, endpoints, lambda _port: notifier.ready(), curve)
            notifier.stopping()
    except OSError as exc:
        print(f"error: opcua {config.opcua.bind_address}:{config.opcua.port}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        context.term()
    return EXIT_OK

"""``inspector opcua --config FILE`` (the OPC UA server beside a daemon), and its helpers: ``hash-password``,
``make-certificate`` (the server's certificate) and ``trust`` (a client certificate into the PKI folder)."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import threading
from pathlib import Path

from inspector.cli.daemon import LOG_LEVELS, SubParsers, add_curve_client_options, curve_client
from inspector.config.load import ConfigError, load_config
from inspector.config.opcua import OpcUaConfig
from inspector.config.root import InspectorConfig
from inspector.core.names import EXIT_FAILURE, EXIT_OK, EXIT_USAGE

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
    making = sub.add_parser(
        "make-certificate",
        help="write the server's self-signed certificate (DER) and key (PEM) for [opcua] application_uri",
    )
    making.add_argument(
        "--config", type=Path, help="take application_uri, certificate and private_key from it"
    )
    making.add_argument("--application-uri", help="the server's application URI (default: the config's)")
    making.add_argument("--certificate", type=Path, help="certificate file to write (default: the config's)")
    making.add_argument("--private-key", type=Path, help="key file to write (default: the config's)")
    making.add_argument(
        "--host", action="append", dest="hosts", metavar="NAME_OR_IP",
        help="a host name or address PLCs connect to (repeatable; default: this machine's name)",
    )  # fmt: skip
    making.add_argument("--days", type=int, default=730, help="validity in days (default 730)")
    making.set_defaults(func=cmd_make_certificate)
    trusting = sub.add_parser(
        "trust",
        help="trust a client certificate (a PLC's, UaExpert's) for secure channels: into the PKI folder",
    )
    trusting.add_argument(
        "file", type=Path, help="the certificate (DER or PEM), e.g. one from <pki_dir>/rejected"
    )
    trusting.add_argument("--config", type=Path, help="the configuration whose [opcua] pki_dir to use")
    trusting.add_argument("--pki-dir", type=Path, help="the PKI folder (default: the config's pki_dir)")
    trusting.add_argument(
        "--issuer",
        action="store_true",
        help="a CA that only completes chains (issuers/certs, not trusted/certs)",
    )
    trusting.set_defaults(func=cmd_trust)


def cmd_hash_password(args: argparse.Namespace) -> int:
    """Print ``NAME = "pbkdf2_sha256$..."`` for the ``[users]`` table of ``opcua.users_file``."""
    from inspector.core.passwords import hash_password

    password = os.environ.get(PASSWORD_ENV)
    if password is None:
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            print("error: the passwords differ", file=sys.stderr)
            return EXIT_FAILURE
    print(f'{args.name} = "{hash_password(password)}"')
    return EXIT_OK


def _opcua_section(path: Path | None) -> OpcUaConfig:
    return load_config(path).opcua if path is not None else InspectorConfig().opcua


def cmd_make_certificate(args: argparse.Namespace) -> int:
    """Write the server certificate; the URI, files and hosts from the options, else from ``--config``."""
    from inspector.plc.certificates import make_certificate
    from inspector.plc.pki import PkiError, thumbprint

    section = _opcua_section(args.config)
    uri = args.application_uri or section.application_uri
    cert_path, key_path = args.certificate or section.certificate, args.private_key or section.private_key
    if cert_path is None or key_path is None:
        print("error: give --certificate and --private-key (or a --config that sets them)", file=sys.stderr)
        return EXIT_USAGE
    try:
        OpcUaConfig(application_uri=uri)
    except ValueError:
        print(
            f"error: --application-uri {uri!r} is not an absolute URI (urn:host:inspector)", file=sys.stderr
        )
        return EXIT_USAGE
    try:
        cert = make_certificate(uri, cert_path, key_path, args.hosts, args.days)
    except PkiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"wrote {cert_path} (application URI {uri}, valid to {cert.not_valid_after_utc:%Y-%m-%d}, "
          f"thumbprint {thumbprint(cert)}) and {key_path}")  # fmt: skip
    return EXIT_OK


def cmd_trust(args: argparse.Namespace) -> int:
    """Copy a certificate into ``trusted/certs`` (or ``issuers/certs``) of the PKI folder."""
    from inspector.plc.pki import PkiError, trust

    root = args.pki_dir or _opcua_section(args.config).pki_dir
    if root is None:
        print("error: give --pki-dir (or a --config whose [opcua] sets pki_dir)", file=sys.stderr)
        return EXIT_USAGE
    try:
        target = trust(args.file, root, issuer=args.issuer)
    except PkiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"trusted: {target} (from the next connection on)")
    return EXIT_OK


def cmd_opcua(args: argparse.Namespace) -> int:
    """Serve OPC UA until SIGTERM or SIGINT (``READY=1`` to systemd once it listens)."""
    if args.config is None:
        print("error: inspector opcua needs --config FILE (the daemon's configuration)", file=sys.stderr)
        return EXIT_FAILURE
    config = load_config(args.config)
    from inspector.plc.certificates import certificate_problems

    problems = certificate_problems(config.opcua)
    if problems:
        raise ConfigError(str(args.config), problems)

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

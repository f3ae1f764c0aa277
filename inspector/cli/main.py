"""The ``inspector`` command: parser, subcommand dispatch, and the errors that become exit codes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from inspector import __version__
from inspector.cli.daemon import add_daemon_commands
from inspector.cli.keys import add_key_commands
from inspector.cli.offline import add_offline_commands
from inspector.cli.opcua import add_opcua_commands
from inspector.cli.parts import add_parts_commands
from inspector.cli.review import add_review_commands
from inspector.config.load import ConfigError
from inspector.core.errors import InspectorError
from inspector.core.names import EXIT_CONFIG, EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE

DESCRIPTION = (
    "Real-time visual inspection with SPADE: build and calibrate galleries of known-good parts, score images, "
    "evaluate on labelled data, and run the inspection daemon (cameras in, verdicts on ZeroMQ)."
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(prog="inspector", description=DESCRIPTION)
    parser.add_argument(
        "--version", action="version", version=f"inspector {__version__}", help="print the version"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_offline_commands(sub)
    add_daemon_commands(sub)
    add_opcua_commands(sub)
    add_parts_commands(sub)
    add_review_commands(sub)
    add_key_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``inspector`` console script.

    Returns:
        The command's exit status; 78 (EX_CONFIG) for a configuration error, one line per bad field on stderr;
        1 for a gallery, backbone, engine, evaluation or image error, its message on stderr; 2 with the list
        of commands when none is given; 130 after Ctrl-C (one line, no traceback: every gallery write is
        all or nothing, so the files are as they were).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.func(args))
    except ConfigError as exc:
        for line in exc.lines:
            print(line, file=sys.stderr)
        return EXIT_CONFIG
    except InspectorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(
            f"interrupted: inspector {args.command} stopped (what it was writing is left as it was)",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())

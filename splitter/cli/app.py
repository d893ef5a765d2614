"""The `splitter` command line: builds the parser from the command modules and runs the one asked for.

Owns: the top-level parser, logging set-up, and turning errors into one-line messages and exit codes
(`splitter.core.exit_codes`; no stack trace for a user's mistake, no secret in a message).
Must not: hold a command's options (its module in `commands/` does) or any pipeline logic.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import metadata

from splitter.cli.commands import COMMANDS
from splitter.cli.options import shared_options
from splitter.core import exit_codes
from splitter.core.errors import ConfigurationError, SplitterError
from splitter.pipeline.daemon import configure_logging


def _version() -> str:
    try:
        return metadata.version("splitter")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    shared = shared_options()
    parser = argparse.ArgumentParser(
        prog="splitter",
        description="Split one PostgreSQL database into per-service databases, without downtime: logical "
                    "replication into an ordered Kafka change log, one worker per service applying it.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub, shared)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        code: int = args.func(args)
        return code
    except ConfigurationError as exc:
        print(f"splitter: configuration error: {exc}", file=sys.stderr)
        return exit_codes.CONFIG
    except SplitterError as exc:
        print(f"splitter: {exc}", file=sys.stderr)
        return exit_codes.FATAL
    except KeyboardInterrupt:
        return exit_codes.INTERRUPTED

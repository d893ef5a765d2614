"""The `splitter` command line: builds the parser from the command modules and runs the one asked for.

Owns: the top-level parser, logging set-up, and turning errors into one-line messages and exit codes
(`splitter.core.exit_codes`; no stack trace for a user's mistake, no secret in a message).
Must not: hold a command's options (its module in `commands/` does) or any pipeline logic.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from splitter.cli.commands import COMMANDS, load, modules_for
from splitter.cli.options import shared_options
from splitter.core import exit_codes
from splitter.core.errors import ConfigurationError, SplitterError
from splitter.pipeline.daemon import configure_logging


def _version() -> str:
    from importlib import metadata  # only when asked: reading the metadata cost every process 40 ms

    try:
        return metadata.version("splitter")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


class _VersionAction(argparse.Action):
    """argparse's `version`, with the version looked up when `--version` is given, not at every start."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="show the version and exit", **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"{parser.prog} {_version()}")  # on stdout, as argparse's own `version` prints it
        parser.exit()


def build_parser(modules: Sequence[str] = COMMANDS) -> argparse.ArgumentParser:
    shared = shared_options()
    parser = argparse.ArgumentParser(
        prog="splitter",
        description="Split one PostgreSQL database into per-service databases, without downtime: logical "
                    "replication into an ordered Kafka change log, one worker per service applying it.")
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in modules:
        load(name).register(sub, shared)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(modules_for(words))
    args = parser.parse_args(words)
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

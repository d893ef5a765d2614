"""`splitter status`: every service's state, lag and throughput, read from the databases."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, TextIO

from splitter.cli.options import SharedOptions, settings_from
from splitter.core import exit_codes
from splitter.ops.status import StatusReader, collect, emit, with_cutover


def register(sub: Any, shared: SharedOptions) -> None:
    p = sub.add_parser(
        "status", parents=shared.client,
        help="lag, state and throughput of every service, read from the databases (no daemon needed)")
    p.add_argument("--json", action="store_true", help="machine-readable output (one JSON object per refresh)")
    p.add_argument("--watch", nargs="?", type=float, const=2.0, default=None, metavar="SECONDS",
                   help="refresh every SECONDS (default 2) until interrupted")
    p.add_argument("--service", action="append", help="only these services (repeatable)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    stream = out or sys.stdout
    settings = settings_from(args)
    if args.watch is None:
        emit(with_cutover(collect(settings, args.service), settings), args.json, stream, clear=False)
        return exit_codes.OK
    interval = max(0.5, float(args.watch))
    reader = StatusReader(settings, args.service)
    try:
        while True:
            started = time.monotonic()
            reader.sample()
            emit(with_cutover(reader.snapshot(), settings), args.json, stream,
                 clear=not args.json and stream.isatty())
            time.sleep(max(0.0, interval - (time.monotonic() - started)))
    except KeyboardInterrupt:
        return exit_codes.OK
    finally:
        reader.close()

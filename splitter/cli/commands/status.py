"""`splitter status`: every service's state, lag and throughput, read from the databases; its exit code says
whether all is well (splitter.ops.status_verdict: 0 ok, 1 lagging, 2 usage, 3 unreachable or stopped).

Owns: the command's options and its loop: one picture (or one per refresh with --watch: a live table on a
terminal, splitter.cli.status_view; a plain table or one JSON object per refresh otherwise).  With --watch
the exit code on Ctrl-C is that of the last refresh (130 if none was shown yet).
Must not: read a database itself (splitter.ops.status does) or decide what a picture means.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

from splitter.cli.options import SharedOptions, add_command, parse_duration, settings_from
from splitter.cli.status_view import watch_live
from splitter.core import exit_codes
from splitter.ops.status import Status, StatusReader, collect, emit, settle, with_cutover
from splitter.ops.status_verdict import DEFAULT_MAX_LAG, judge
from splitter.pipeline.config import Settings

#: The shortest --watch interval (each refresh reads every database once).
MIN_WATCH = 0.5


def register(sub: Any, shared: SharedOptions) -> None:
    p = add_command(
        sub, "status", parents=shared.client,
        summary="lag, state and throughput of every service, read from the databases (no daemon needed)",
        description="Reads the source (WAL position, replication slot, cutover and stop records) and every "
                    "service database (checkpoint, hold, dead letters) and shows per service its state, its lag "
                    "in seconds and bytes (both 0 when nothing is left to apply), rows/s and the last problem. "
                    "The exit code is for probes and cron jobs: 0 every service streams within --max-lag, "
                    "1 a service lags past it, is stalled or has not caught up yet, 2 a usage error, 3 a "
                    "database cannot be read (down, wrong password, missing) or a component stopped for good.",
        examples=["splitter status",
                  "splitter status --json --max-lag 10s || alert-on-call",
                  "splitter status --watch 1 --service auth --service user"])
    p.add_argument("--json", action="store_true",
                   help="machine-readable output: one JSON object per picture on stdout (with --watch, one per "
                        "refresh), including the exit code and its reasons under \"verdict\"")
    p.add_argument("--watch", nargs="?", type=parse_duration, const=2.0, default=None, metavar="INTERVAL",
                   help="refresh every INTERVAL (default 2s, at least 0.5s) until Ctrl-C: a live table on a "
                        "terminal, a plain table (or JSON) per refresh otherwise; the exit code is the last "
                        "refresh's")
    p.add_argument("--service", action="append", metavar="SERVICE",
                   help="show and judge only this service (repeatable; default every service of the topology)")
    p.add_argument("--max-lag", type=parse_duration, default=DEFAULT_MAX_LAG, metavar="DURATION",
                   help=f"the most lag (e.g. 500ms, 30s, 2m) a service may have for exit code 0 "
                        f"(default {DEFAULT_MAX_LAG:g}s; more is exit code 1)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    stream = out or sys.stdout
    settings = settings_from(args)
    if args.watch is None:
        status = _judged(collect(settings, args.service), settings, args.max_lag)
        emit(status, args.json, stream, clear=False)
        assert status.verdict is not None
        return status.verdict.exit_code
    reader = StatusReader(settings, args.service)
    last: list[int] = []

    def shown(status: Status) -> None:
        assert status.verdict is not None
        last.append(status.verdict.exit_code)

    refreshes = _refreshes(reader, settings, args.max_lag, max(MIN_WATCH, float(args.watch)))
    try:
        if stream.isatty() and not args.json:
            watch_live(stream, refreshes, shown)
        else:
            for status in refreshes:
                emit(status, args.json, stream, clear=False)
                shown(status)
    except KeyboardInterrupt:
        return last[-1] if last else exit_codes.INTERRUPTED
    finally:
        reader.close()
    return last[-1] if last else exit_codes.INTERRUPTED  # the refreshes never end on their own


def _judged(status: Status, settings: Settings, max_lag: float) -> Status:
    status = with_cutover(status, settings)
    status.verdict = judge(status, max_lag)
    return status


def _refreshes(reader: StatusReader, settings: Settings, max_lag: float, interval: float) -> Iterator[Status]:
    """One judged picture per `interval`; the first once the reader has settled (splitter.ops.status.settle)."""
    settle(reader)
    while True:
        started = time.monotonic()
        yield _judged(reader.snapshot(), settings, max_lag)
        time.sleep(max(0.0, interval - (time.monotonic() - started)))
        reader.sample()

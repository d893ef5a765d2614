"""`splitter reverse`: the reverse stream daemon for every switched service (idle otherwise)."""

from __future__ import annotations

import argparse
import threading
from typing import Any

from splitter.cli.options import SharedOptions, add_command, settings_from
from splitter.core.dsn import SOURCE_DATABASE
from splitter.pipeline.daemon import ComponentRecord, install_stop_signals, run_with_retries, stop_exit_code
from splitter.pipeline.reverse import ReverseDaemon


def register(sub: Any, shared: SharedOptions) -> None:
    p = add_command(
        sub, "reverse", parents=shared.client,
        summary="the reverse stream daemon: copy what cut-over services write back into the source",
        description="Run a reverse capture (on the service database) and a reverse worker (into the source) for "
                    "every given service whose cutover is switched; idle otherwise. `splitter run` supervises it; "
                    "run it on its own when capture and the workers run as separate processes. Runs until "
                    "stopped (SIGTERM or Ctrl-C).",
        examples=["splitter reverse", "splitter reverse --service post --service topic"])
    p.add_argument("--service", action="append", metavar="SERVICE",
                   help="stream back only this service's writes (repeatable; default: every service)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    stop = threading.Event()
    install_stop_signals(stop)
    # A stop for good is recorded in the source's splitter.components (`splitter status` shows it).
    record = ComponentRecord(settings.source_dsn, SOURCE_DATABASE, "reverse")
    with record.on_failure():
        return stop_exit_code(
            run_with_retries("reverse", lambda ev: ReverseDaemon(settings, args.service).run(ev), stop, record))

"""`splitter capture`: stream the source into the change log (one per source).

Owns: the command's options and wiring (settings, stop signals, stop record, metrics).  Must not: hold capture's
logic (splitter.pipeline.capture) or its retry policy (splitter.pipeline.daemon: capped backoff, shared with
`splitter run`'s start).
"""

from __future__ import annotations

import argparse
import threading
from typing import Any

from splitter.cli.options import SharedOptions, add_command, settings_from
from splitter.core.dsn import SOURCE_DATABASE
from splitter.observe.metrics import start_metrics
from splitter.pipeline.capture import Capture
from splitter.pipeline.daemon import ComponentRecord, install_stop_signals, run_with_retries, stop_exit_code


def register(sub: Any, shared: SharedOptions) -> None:
    p = add_command(
        sub, "capture", parents=shared.daemon,
        summary="stream the source into the change log (one per source)",
        description="Create the publication and the logical slot if absent, copy every service database that "
                    "has no checkpoint from the slot's snapshot, then stream every committed change of the "
                    "published tables into the Kafka change log in commit order, confirming a position to the "
                    "slot only once Kafka acknowledged it. `splitter run` starts it; run it on its own to place "
                    "it elsewhere. A source or broker that does not answer is retried with backoff capped at "
                    "30 s (named in the log and in `splitter status`); a refusal no retry mends exits 2 or 3.",
        examples=["splitter capture", "splitter capture --metrics-port 9100",
                  "SPLITTER_SOURCE_DSN=postgresql://splitter@db/bento_social splitter capture"])
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    stop = threading.Event()
    install_stop_signals(stop)
    # A stop for good is recorded in the source's splitter.components (`splitter status` shows it).
    record = ComponentRecord(settings.source_dsn, SOURCE_DATABASE, "capture")
    with record.on_failure(), start_metrics(settings, "capture", port=args.metrics_port,
                                            host=args.metrics_host) as metrics:
        return stop_exit_code(
            run_with_retries("capture", metrics.instrument(lambda: Capture(settings)), stop, record))

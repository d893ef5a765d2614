"""`splitter worker --service S`: apply the change log to one service database."""

from __future__ import annotations

import argparse
import threading
from typing import Any

from splitter.cli.options import SharedOptions, add_command, settings_from
from splitter.core.dsn import service_database
from splitter.observe.metrics import start_metrics
from splitter.pipeline.daemon import ComponentRecord, install_stop_signals, run_with_retries, stop_exit_code
from splitter.pipeline.worker import Worker


def register(sub: Any, shared: SharedOptions) -> None:
    p = add_command(
        sub, "worker", parents=shared.daemon,
        summary="apply the change log to one service database",
        description="Read the change log from Kafka and apply what the topology routes to one service, in "
                    "source commit order, into its database; its position (a checkpoint) commits with the rows. "
                    "`splitter run` starts one per service; run it on its own to place workers elsewhere. "
                    "Runs until stopped (SIGTERM or Ctrl-C); retries what can be retried.",
        examples=["splitter worker --service post",
                  "splitter worker --service post --metrics-port 9101"])
    p.add_argument("--service", required=True, metavar="SERVICE",
                   help="the service (as named in the topology) whose database this worker applies to")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    settings.topology.service(args.service)
    stop = threading.Event()
    install_stop_signals(stop)
    # A stop for good is recorded in the service database's splitter.components (`splitter status` shows it).
    record = ComponentRecord(settings.target_dsn(args.service), service_database(args.service), "worker",
                             args.service)
    with record.on_failure(), start_metrics(settings, "worker", service=args.service,
                                            port=args.metrics_port, host=args.metrics_host) as metrics:
        return stop_exit_code(run_with_retries(f"worker[{args.service}]",
                                               metrics.instrument(lambda: Worker(settings, args.service)), stop,
                                               record))

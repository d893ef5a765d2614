"""`splitter worker --service S`: apply the change log to one service database."""

from __future__ import annotations

import argparse
import threading
from typing import Any

from splitter.cli.options import SharedOptions, settings_from
from splitter.observe.metrics import start_metrics
from splitter.pipeline.daemon import ComponentRecord, install_stop_signals, run_with_retries
from splitter.pipeline.worker import Worker


def register(sub: Any, shared: SharedOptions) -> None:
    p = sub.add_parser("worker", help="apply the change log to one service database", parents=shared.daemon)
    p.add_argument("--service", required=True)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    settings.topology.service(args.service)
    stop = threading.Event()
    install_stop_signals(stop)
    # A stop for good is recorded in the service database's splitter.components (`splitter status` shows it).
    record = ComponentRecord(settings.target_dsn(args.service), f"database of service {args.service}", "worker",
                             args.service)
    with record.on_failure(), start_metrics(settings, "worker", service=args.service,
                                            port=args.metrics_port, host=args.metrics_host) as metrics:
        return run_with_retries(f"worker[{args.service}]",
                                metrics.instrument(lambda: Worker(settings, args.service)), stop, record)

"""`splitter capture`: stream the source into the change log (one per source)."""

from __future__ import annotations

import argparse
import threading
from typing import Any

from splitter.cli.options import SharedOptions, settings_from
from splitter.observe.metrics import start_metrics
from splitter.pipeline.capture import Capture
from splitter.pipeline.daemon import ComponentRecord, install_stop_signals, run_with_retries


def register(sub: Any, shared: SharedOptions) -> None:
    p = sub.add_parser("capture", help="stream the source into the change log (one per source)", parents=shared.daemon)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    stop = threading.Event()
    install_stop_signals(stop)
    # A stop for good is recorded in the source's splitter.components (`splitter status` shows it).
    record = ComponentRecord(settings.source_dsn, "the source database", "capture")
    with record.on_failure(), start_metrics(settings, "capture", port=args.metrics_port,
                                            host=args.metrics_host) as metrics:
        return run_with_retries("capture", metrics.instrument(lambda: Capture(settings)), stop, record)

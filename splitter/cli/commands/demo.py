"""`splitter demo`: everything on embedded servers (devtools.demo, imported only when the command runs)."""

from __future__ import annotations

import argparse
import importlib
from typing import Any

from splitter.cli.options import SharedOptions, add_command


def register(sub: Any, shared: SharedOptions) -> None:
    p = add_command(
        sub, "demo", parents=shared.local,
        summary="start embedded PostgreSQL and Kafka, fill bento_social, run everything",
        description="Start embedded PostgreSQL 18 (password authentication: the generated password is only in a "
                    "pgpass file in the data directory) and a Kafka-protocol broker (no Docker), generate "
                    "bento_social with a live write workload, and run capture and one worker per service against "
                    "them, showing each service's lag. At start it prints an `export ...` line that points "
                    "`splitter status`, `splitter verify` and psql in another terminal at these servers, and "
                    "where its log is. On Ctrl-C (or after --duration) it stops the workload, lets every service "
                    "catch up, verifies every service database and exits 0 only if all match (a second Ctrl-C "
                    "stops at once, exit 130); the log file is kept.",
        examples=["splitter demo", "splitter demo --duration 60 --scale 500 --json",
                  "splitter demo --migrate --duration 20"])
    p.add_argument("--duration", type=float, default=None,
                   help="run this many seconds, then stop the workload, verify, and exit 0 only if all match")
    p.add_argument("--scale", type=int, default=2000, help="users to generate (other tables scale with it)")
    p.add_argument("--rate", type=float, default=None, help="workload operations per second (default: unthrottled)")
    p.add_argument("--migrate", action="store_true",
                   help="the whole migration: stream, cut every service over (roll auth back and over again), "
                        "complete every service, with an application following the routing; --duration is "
                        "seconds per phase; exit 0 only if nothing was lost")
    p.add_argument("--data-dir", default=None,
                   help="keep the embedded servers' data here, and reuse it next time (default: a temporary "
                        "directory whose data is removed at exit; its log files are kept)")
    p.add_argument("--json", action="store_true",
                   help="at exit, write one JSON object on stdout: exit code, verify result per service, where "
                        "the log and the data are (the live view and messages go to stderr)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # By name: production code never imports the development tools (an import-linter contract checks it).
    demo = importlib.import_module("devtools.demo")
    code: int = demo.run_demo(duration=args.duration, scale=args.scale, data_dir=args.data_dir, rate=args.rate,
                              log_level=args.log_level, migrate=args.migrate,
                              metrics_port=args.metrics_port, metrics_host=args.metrics_host, json_out=args.json)
    return code

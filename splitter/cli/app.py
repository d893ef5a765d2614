"""The `splitter` command line: parses options and hands each command to the module that owns it.

Owns: argument parsing, turning errors into one-line messages and exit codes (no stack trace for
a user's mistake), and passing settings to child processes through the environment (never argv,
where `ps` would show passwords).  Must not: hold pipeline logic.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import threading
from collections.abc import Sequence
from typing import Any

from splitter.core.dsn import mask_secrets
from splitter.core.errors import ConfigurationError, FatalError, SplitterError
from splitter.pipeline.config import Settings, build_settings
from splitter.pipeline.daemon import (
    EXIT_CONFIG,
    EXIT_FATAL,
    Supervisor,
    child_argv,
    configure_logging,
    install_stop_signals,
    run_with_retries,
)

log = logging.getLogger("splitter")

# Modules that add their own subcommands (each exposes add_commands(subparsers, common_parser)).
OPERATOR_COMMANDS = ("splitter.ops.verify", "splitter.ops.replay", "splitter.ops.dlq", "splitter.ops.status",
                     "splitter.ops.cutover", "splitter.ops.backfill")


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("connections (also from the environment)")
    g.add_argument("--topology", help="topology file (SPLITTER_TOPOLOGY, default ./topology.py)")
    g.add_argument("--source-dsn", help="source database DSN (SPLITTER_SOURCE_DSN)")
    g.add_argument("--kafka", help="Kafka bootstrap servers (SPLITTER_KAFKA)")
    g.add_argument("--target-dsn", action="append", default=[], metavar="SERVICE=DSN",
                   help="a service database DSN (SPLITTER_TARGET_DSN_<SERVICE>; default: the source DSN with the "
                        "service's database name)")
    g.add_argument("--topic", help="change-log topic (SPLITTER_TOPIC, default <source database>.changes)")
    g.add_argument("--slot", help="replication slot name (SPLITTER_SLOT, default splitter)")
    g.add_argument("--publication", help="publication name (SPLITTER_PUBLICATION, default splitter)")
    g.add_argument("--log-level", default=os.environ.get("SPLITTER_LOG_LEVEL", "INFO"))
    # argparse converts a string default with `type`, so a bad SPLITTER_METRICS_PORT is a usage error.
    g.add_argument("--metrics-port", type=int, default=os.environ.get("SPLITTER_METRICS_PORT") or None,
                   help="serve /metrics and /healthz on this port (SPLITTER_METRICS_PORT; `run` gives capture this "
                        "port and worker i port+i)")
    return p


def _settings(args: argparse.Namespace, **tuning: Any) -> Settings:
    targets = {}
    for item in args.target_dsn:
        service, sep, dsn = item.partition("=")
        if not sep or not service or not dsn:
            raise ConfigurationError(f"--target-dsn expects SERVICE=DSN, got {mask_secrets(item)!r}")
        targets[service] = dsn
    return build_settings(topology_path=args.topology, source_dsn=args.source_dsn, kafka=args.kafka,
                          target_dsns=targets, topic=args.topic, slot=args.slot, publication=args.publication,
                          **tuning)


def settings_env(settings: Settings, topology_path: str | None) -> dict[str, str]:
    """The environment that gives a child process the same settings."""
    env = dict(os.environ)
    env["SPLITTER_SOURCE_DSN"] = settings.source_dsn
    env["SPLITTER_KAFKA"] = settings.kafka_bootstrap
    env["SPLITTER_TOPIC"] = settings.topic
    env["SPLITTER_SLOT"] = settings.slot
    env["SPLITTER_PUBLICATION"] = settings.publication
    if topology_path:
        env["SPLITTER_TOPOLOGY"] = os.path.abspath(topology_path)
    for service, dsn in settings.target_dsns.items():
        env[f"SPLITTER_TARGET_DSN_{service.upper()}"] = dsn
    return env


def cmd_capture(args: argparse.Namespace) -> int:
    from splitter.observe.metrics import start_metrics
    from splitter.pipeline.capture import Capture

    settings = _settings(args)
    stop = threading.Event()
    install_stop_signals(stop)
    with start_metrics(settings, "capture", port=args.metrics_port) as metrics:
        return run_with_retries("capture", metrics.instrument(lambda: Capture(settings)), stop)


def cmd_worker(args: argparse.Namespace) -> int:
    from splitter.pipeline.worker import Worker

    settings = _settings(args)
    settings.topology.service(args.service)
    from splitter.observe.metrics import start_metrics

    stop = threading.Event()
    install_stop_signals(stop)
    with start_metrics(settings, "worker", service=args.service, port=args.metrics_port) as metrics:
        return run_with_retries(f"worker[{args.service}]",
                                metrics.instrument(lambda: Worker(settings, args.service)), stop)


def cmd_run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    services = [s.name for s in settings.topology.services]
    if args.service:
        for name in args.service:
            settings.topology.service(name)
        services = list(args.service)
    from splitter.ops.cutover_state import completed_services

    retired = completed_services(settings)  # their forward worker is held for good by `splitter complete`
    services = [s for s in services if s not in retired]

    def port(i: int) -> list[str]:
        # Each child its own port: capture base+0, the i-th worker base+i (argv: a port is no secret).
        return [] if args.metrics_port is None else ["--metrics-port", str(args.metrics_port + i)]

    children = [("capture", child_argv([], ["capture", "--log-level", args.log_level, *port(0)]))]
    children += [(f"worker[{s}]", child_argv([], ["worker", "--service", s, "--log-level", args.log_level,
                                                  *port(i)]))
                 for i, s in enumerate(services, start=1)]
    reverse = ["reverse", "--log-level", args.log_level]
    for name in args.service or []:
        reverse += ["--service", name]
    children.append(("reverse", child_argv([], reverse)))  # idles unless a service has been switched
    stop = threading.Event()
    install_stop_signals(stop)
    log.info("starting capture and %d worker(s): %s", len(services), ", ".join(services))
    return Supervisor(children, env=settings_env(settings, args.topology)).run(stop)


def cmd_plan(args: argparse.Namespace) -> int:
    from splitter.ops.plan import run_plan

    settings = _settings(args)
    return int(run_plan(settings, json_output=args.json))


def cmd_demo(args: argparse.Namespace) -> int:
    from devtools.demo import run_demo

    return run_demo(duration=args.duration, scale=args.scale, data_dir=args.data_dir, rate=args.rate,
                    log_level=args.log_level)


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog="splitter",
        description="Split one PostgreSQL database into per-service databases, without downtime: logical "
                    "replication into an ordered Kafka change log, one worker per service applying it.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="start embedded PostgreSQL and Kafka, fill bento_social, run everything",
                       parents=[common])
    p.add_argument("--duration", type=float, default=None,
                   help="run this many seconds, then stop the workload, verify, and exit 0 only if all match")
    p.add_argument("--scale", type=int, default=2000, help="users to generate (other tables scale with it)")
    p.add_argument("--rate", type=float, default=None, help="workload operations per second (default: unthrottled)")
    p.add_argument("--data-dir", default=None, help="keep the embedded servers' data here (default: a temp dir)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("plan", help="show the routing table and every problem found before data moves",
                       parents=[common])
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("run", help="the daemon: capture and every worker as one process tree", parents=[common])
    p.add_argument("--service", action="append", help="run workers for these services only (repeatable)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("capture", help="stream the source into the change log (one per source)", parents=[common])
    p.set_defaults(func=cmd_capture)

    p = sub.add_parser("worker", help="apply the change log to one service database", parents=[common])
    p.add_argument("--service", required=True)
    p.set_defaults(func=cmd_worker)

    for module in OPERATOR_COMMANDS:
        try:
            imported = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        imported.add_commands(sub, common)
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
        return EXIT_CONFIG
    except FatalError as exc:
        print(f"splitter: {exc}", file=sys.stderr)
        return EXIT_FATAL
    except SplitterError as exc:
        print(f"splitter: {exc}", file=sys.stderr)
        return EXIT_FATAL
    except KeyboardInterrupt:
        return 130

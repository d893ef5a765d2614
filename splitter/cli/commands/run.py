"""`splitter run`: the daemon, capture and one worker per service and the reverse stream as one process tree.

A child that exits with a configuration or fatal code stays down (`splitter status` shows why; restart
`splitter run` once the cause is fixed); other exits are restarted with backoff.  The run ends, with the
highest exit code among them, once nothing can make progress: capture is down for good (nothing new can
enter the change log), or every worker is (nothing would apply it).  A worker or the reverse stream down
for good while capture and at least one worker run is degraded: the run goes on.
"""

from __future__ import annotations

import argparse
import logging
import threading
from typing import Any

from connectors.pg.state.cutover import completed_services
from splitter.cli.options import SharedOptions, metrics_argv, settings_env, settings_from
from splitter.pipeline.daemon import Supervisor, child_argv, install_stop_signals
from splitter.topology.ownership import retired_services

log = logging.getLogger("splitter")


def register(sub: Any, shared: SharedOptions) -> None:
    p = sub.add_parser("run", help="the daemon: capture and every worker as one process tree", parents=shared.daemon)
    p.add_argument("--service", action="append", help="run workers for these services only (repeatable)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    services = [s.name for s in settings.topology.services]
    if args.service:
        for name in args.service:
            settings.topology.service(name)
        services = list(args.service)
    # Every table of these is retired: their forward worker is held for good by `splitter complete`.
    retired = retired_services(settings.topology, completed_services(settings.source_dsn))
    services = [s for s in services if s not in retired]

    def port(i: int) -> list[str]:
        # Each child its own port: capture base+0, the i-th worker base+i, all on --metrics-host.
        return metrics_argv(args.metrics_port, args.metrics_host, i)

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
    workers = [name for name, _argv in children if name.startswith("worker[")]
    return Supervisor(children, env=settings_env(settings, args.topology), needed=[["capture"], workers]).run(stop)

"""`splitter run`: the daemon, capture and one worker per service and the reverse stream as one process tree.

A child that exits with a configuration or fatal code stays down (`splitter status` shows why; restart
`splitter run` once the cause is fixed); other exits are restarted with backoff.  The run ends, with the
highest exit code among them, once nothing can make progress: capture is down for good (nothing new can
enter the change log), or every worker is (nothing would apply it).  A worker or the reverse stream down
for good while capture and at least one worker run is degraded: the run goes on.  A source that does not
answer at start is retried with capture's capped backoff before any child starts (which services are
complete is read there); a refusal no retry mends (wrong password, missing database) exits 2 at once.
Ctrl-C stops the children once, in order, and exits 130; SIGTERM exits 0.
"""

from __future__ import annotations

import argparse
import logging
import threading
from typing import Any

from connectors.pg.state.cutover import completed_services
from splitter.cli.options import SharedOptions, add_command, metrics_argv, settings_env, settings_from
from splitter.core import exit_codes
from splitter.pipeline.daemon import install_stop_signals, retry_until_done, stop_exit_code
from splitter.pipeline.supervisor import Supervisor, child_argv
from splitter.topology.ownership import retired_services

log = logging.getLogger("splitter")


def register(sub: Any, shared: SharedOptions) -> None:
    p = add_command(
        sub, "run", parents=shared.daemon,
        summary="the daemon: capture, every worker and the reverse stream as one process tree",
        description="Start capture, one worker per service (not for services whose cutover is complete) and the "
                    "reverse stream as child processes, and keep them running: a child that exits is restarted "
                    "with capped backoff, one that exits 2 or 3 stays down (`splitter status` says why), and the "
                    "run ends once capture or every worker is down for good. A source that does not answer yet "
                    "is retried the same way. Ctrl-C or SIGTERM stops every child; each resumes from its "
                    "checkpoint on the next start.",
        examples=["splitter run", "splitter run --metrics-port 9100 --metrics-host 0.0.0.0",
                  "splitter run --service post --service comment"])
    p.add_argument("--service", action="append", metavar="SERVICE",
                   help="run workers for this service only (repeatable; default: every service of the topology)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    services = [s.name for s in settings.topology.services]
    if args.service:
        for name in args.service:
            settings.topology.service(name)
        services = list(args.service)
    stop = threading.Event()
    install_stop_signals(stop)
    # Every table of these is retired: their forward worker is held for good by `splitter complete`.
    retired = retry_until_done(
        "run", lambda: retired_services(settings.topology, completed_services(settings.source_dsn)), stop)
    if retired is None:  # stopped while the source did not answer
        return stop_exit_code(exit_codes.OK)
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
    log.info("starting capture and %d worker(s): %s", len(services), ", ".join(services))
    workers = [name for name, _argv in children if name.startswith("worker[")]
    supervisor = Supervisor(children, env=settings_env(settings, args.topology), needed=[["capture"], workers])
    return stop_exit_code(supervisor.run(stop))

"""`splitter cutover`, `rollback` and `complete`: move a service's (or a group's) writes, back, or for good."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from splitter.cli.options import SharedOptions, confirmer, parse_duration, settings_from
from splitter.core import exit_codes
from splitter.ops.cutover import DEFAULT_MAX_LAG, DEFAULT_TIMEOUT, Cutover, CutoverAborted, CutoverRefused, Options

_ACTIONS = {
    "cutover": "move the writes of what a service owns to its own database (fence, catch up, verify, switch)",
    "rollback": "move a cut-over service's writes back to the source database",
    "complete": "finish a cutover (no rollback after); retires the tables whose every owner is complete",
}


def register(sub: Any, shared: SharedOptions) -> None:
    for action, help_text in _ACTIONS.items():
        p = sub.add_parser(action, parents=shared.client, help=help_text)
        p.add_argument("--service", required=True, action="append",
                       help="the service; repeat it to move several services together, in one switch")
        p.add_argument("--dry-run", action="store_true", help="show the plan and the preflight, change nothing")
        p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        p.add_argument("--timeout", type=parse_duration, default=DEFAULT_TIMEOUT,
                       help=f"give up (and undo) if the steps before the switch take longer (default "
                            f"{DEFAULT_TIMEOUT:g}s)")
        p.add_argument("--max-lag", type=parse_duration, default=DEFAULT_MAX_LAG,
                       help=f"refuse to start if the stream is further behind (default {DEFAULT_MAX_LAG:g}s)")
        p.add_argument("--switch-command", help="run this at the switch, with SPLITTER_SERVICE and SPLITTER_HOME "
                                                "(source|service) and SPLITTER_HOME_DATABASE in its environment")
        p.add_argument("--switch-url", help="POST {service, home, database} as JSON here at the switch (http or "
                                            "https; redirects are not followed)")
        p.add_argument("--switch-env", action="append", metavar="NAME",
                       help="pass this variable to the switch command (repeatable; SPLITTER_SWITCH_ENV, a comma "
                            "list); it inherits only PATH, HOME, the locale and the like otherwise")
        p.add_argument("--switch-token-env", metavar="NAME", default=os.environ.get("SPLITTER_SWITCH_TOKEN_ENV"),
                       help="send the value of this variable as 'Authorization: Bearer ...' to --switch-url "
                            "(SPLITTER_SWITCH_TOKEN_ENV; the token itself never goes in argv)")
        p.set_defaults(func=run, action=action)


def switch_env(args: argparse.Namespace) -> tuple[str, ...]:
    """--switch-env names, or SPLITTER_SWITCH_ENV's when none is given (the command line wins, as elsewhere)."""
    names = args.switch_env or os.environ.get("SPLITTER_SWITCH_ENV", "").split(",")
    return tuple(name.strip() for name in names if name.strip())


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    options = Options(max_lag=args.max_lag, timeout=args.timeout, switch_command=args.switch_command,
                      switch_url=args.switch_url, switch_env=switch_env(args),
                      switch_token_env=args.switch_token_env, dry_run=args.dry_run)
    try:
        with Cutover(settings, args.service, options) as job:
            action: Callable[[Callable[[str], bool]], int] = getattr(job, args.action)
            return action(confirmer(args.yes))
    except CutoverRefused as exc:
        print(f"splitter: refused: {exc}", file=sys.stderr)
        return exit_codes.REFUSED
    except CutoverAborted as exc:
        print(f"splitter: {exc}", file=sys.stderr)
        return exit_codes.ABORTED

"""`splitter cutover`, `rollback` and `complete`: move a service's (or a group's) writes, back, or for good."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from splitter.cli.options import SharedOptions, add_command, confirmer, parse_duration, settings_from
from splitter.cli.progress import ProgressView
from splitter.core import exit_codes
from splitter.core.errors import ConfigurationError, SplitterError
from splitter.ops.cutover import DEFAULT_MAX_LAG, DEFAULT_TIMEOUT, Cutover, CutoverAborted, CutoverRefused, Options
from splitter.ops.cutover.report import Report

_ACTIONS = {
    "cutover": (
        "move the writes of what a service owns to its own database (fence, catch up, verify, switch)",
        "Move the writes of what a service owns (or several services, in one switch) from the source to its own "
        "database: preflight, reverse slots, a fence on what it owns in the source, wait for its worker to apply "
        "everything before the fence, a final verify, then the switch (routing says 'service', the switch hook "
        "runs) and the reverse stream back into the source. Every step before the switch is undone on failure "
        "(exit 5); a precondition that does not hold changes nothing (exit 4); a switch whose reverse stream is "
        "not confirmed yet exits 6 (run it again). Shows the plan and asks first (or --yes); --dry-run shows it "
        "only. The steps show as progress on stderr.",
        ["splitter cutover --service post --dry-run",
         "splitter cutover --service post --yes --switch-url https://deploy.example/switch --json",
         "splitter cutover --service post --service topic --yes --timeout 60s"]),
    "rollback": (
        "move a cut-over service's writes back to the source database",
        "Move a cut-over service's (or group's) writes back to the source database: fence its tables in its own "
        "database, wait for the reverse stream to bring back every write, verify, switch routing back, lift the "
        "source fence and drop the reverse stream. Before its switch a failure is undone (exit 5) and writes go "
        "to the service database again. Shows the plan and asks first (or --yes).",
        ["splitter rollback --service post --dry-run",
         "splitter rollback --service post --yes --json"]),
    "complete": (
        "finish a cutover (no rollback after); retires the tables whose every owner is complete",
        "Make a switched cutover final: no rollback after it. A source table whose every owner is complete is "
        "retired: the streams that fed it stop (reverse streams caught up first) and its fences are lifted; it "
        "says when the source has no writer left. Shows the plan and asks first (or --yes).",
        ["splitter complete --service post --dry-run",
         "splitter complete --service auth --service user --yes --json"]),
}


def register(sub: Any, shared: SharedOptions) -> None:
    for action, (summary, description, examples) in _ACTIONS.items():
        p = add_command(sub, action, parents=shared.client, summary=summary, description=description,
                        examples=examples)
        p.add_argument("--service", required=True, action="append", metavar="SERVICE",
                       help="the service; repeat it to move several services together, in one switch")
        p.add_argument("--dry-run", action="store_true", help="show the plan and the preflight, change nothing")
        p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        p.add_argument("--json", action="store_true",
                       help="one JSON object on stdout: the plan (with --dry-run), the steps, the result and each "
                            "service's state; progress and logs stay on stderr; the exit code is the same")
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
    with ProgressView() as view:
        report = Report(echo=None if args.json else print, progress=view)
        report.begin(args.action)
        # With --json the plan and the question go to stderr: stdout holds only the JSON object.
        ask = confirmer(args.yes, stream=sys.stderr if args.json else None)

        def confirm(plan: str) -> bool:
            view.close()  # no live bar over the plan and the question
            return ask(plan)

        code, error, states = exit_codes.FATAL, None, None
        try:
            with Cutover(settings, args.service, options, report=report) as job:
                action: Callable[[Callable[[str], bool]], int] = getattr(job, args.action)
                try:
                    code = action(confirm)
                finally:
                    states = job.outcome()
        except CutoverRefused as exc:
            code, error = exit_codes.REFUSED, f"refused: {exc}"
        except CutoverAborted as exc:
            code, error = exit_codes.ABORTED, str(exc)
        except SplitterError as exc:
            if not args.json:
                raise  # the command line's one-line message and exit code
            code = exit_codes.CONFIG if isinstance(exc, ConfigurationError) else exit_codes.FATAL
            error = str(exc)
    if error is not None:
        print(f"splitter: {error}", file=sys.stderr)
    if args.json:
        print(json.dumps(report.to_dict(services=list(dict.fromkeys(args.service)), dry_run=args.dry_run,
                                        code=code, error=error, states=states), default=str))
    return code

"""`splitter replay`: rewind one service in the change log and re-apply from there.

Owns: the command's options and help, checking its arguments before anything connects (every problem at
once: `splitter.ops.replay_start`), the confirmation, and the report (text, or one JSON object with
`--json`; progress of the count goes to stderr).  Must not: plan or perform the replay (`splitter.ops.replay`).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from splitter.cli.options import SharedOptions, add_command, ask_yes, settings_from
from splitter.cli.progress import ProgressView
from splitter.core import exit_codes
from splitter.core.errors import ConfigurationError
from splitter.ops.replay import ReplayPlan, ReplayResult, describe, plan_dict, plan_replay, submit_replay
from splitter.ops.replay_start import StartPoint, check_arguments
from splitter.pipeline.config import Settings


def offset_argument(text: str) -> int:
    """--from-offset: an offset of the change log, so a whole number >= 0 (a usage error otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an offset (a whole number, 0 or more)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative: an offset of the change log is 0 or more")
    return value


def register(sub: Any, shared: SharedOptions) -> None:
    p = add_command(
        sub, "replay", parents=shared.client,
        summary="rewind one service in the change log and re-apply from there (others keep streaming)",
        description="Move one service's position in the change log back to an offset, a time or a source LSN, and "
                    "let its worker re-apply every transaction from the start of the transaction there (for a "
                    "restored backup, or after fixing a topology expression). Other services keep streaming. "
                    "The arguments are checked before anything connects; the point is found with the broker's "
                    "own indexes and refused at once if the log does not hold it (past its end, before its start, "
                    "or past what the service applied unless --accept-gap). Then only the range replayed is read, "
                    "to count it (progress on stderr), the plan is shown and, once confirmed, handed to the "
                    "service's running worker. Exit 0 when the worker performed it, 1 when not confirmed or the "
                    "worker did not answer within --wait seconds, 2 for a refused argument.",
        examples=["splitter replay --service post --from-time 2026-11-28T09:30:00Z --dry-run",
                  "splitter replay --service post --from-offset 120455 --yes --json",
                  "splitter replay --service post --from-offset 98000 --accept-gap --yes"])
    p.add_argument("--service", required=True, metavar="SERVICE", help="the service to rewind (as in topology.py)")
    start = p.add_argument_group("where to start (exactly one)")
    start.add_argument("--from-offset", type=offset_argument, metavar="OFFSET",
                       help="an offset of the change-log topic (0 or more); the replay starts at the first record "
                            "of the transaction there")
    start.add_argument("--from-time", metavar="TIME",
                       help="an ISO 8601 time (UTC if no zone, e.g. 2026-11-28T09:30:00Z): the first record written "
                            "at or after it")
    start.add_argument("--from-lsn", metavar="LSN",
                       help="a source LSN (e.g. 0/16B3748): the first record with a commit LSN at or after it")
    p.add_argument("--dry-run", action="store_true", help="say what would be re-applied, change nothing")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--accept-gap", action="store_true",
                   help="allow starting past what the service applied, or before the log's first record (records "
                        "gone from the log); then re-copy its tables with `splitter backfill`")
    p.add_argument("--wait", type=float, default=60.0, metavar="SECONDS",
                   help="how long to wait for the worker to perform the replay (default 60; it stays queued "
                        "after that)")
    p.add_argument("--json", action="store_true",
                   help="the plan (and the result, after a submit) as one JSON object on stdout")
    p.set_defaults(func=run)


def _checked(args: argparse.Namespace) -> tuple[Settings, StartPoint]:
    """The settings and the start point, once every argument problem is known: all are named in one error."""
    problems: list[str] = []
    settings: Settings | None = None
    start: StartPoint | None = None
    try:
        settings = settings_from(args)  # loads the topology; connects to nothing
    except ConfigurationError as exc:
        problems.append(str(exc))
    if settings is not None:
        try:
            start = check_arguments(settings.topology, args.service, from_offset=args.from_offset,
                                    from_time=args.from_time, from_lsn=args.from_lsn)
        except ConfigurationError as exc:
            problems.append(str(exc))
    if problems or settings is None or start is None:
        raise ConfigurationError("; ".join(problems))
    return settings, start


def to_json(plan: ReplayPlan, result: ReplayResult | None, *, dry_run: bool, code: int) -> str:
    """`splitter replay --json` (README "JSON output", replay, describes each field)."""
    return json.dumps({
        "command": "replay", "service": plan.service, "dry_run": dry_run, "exit_code": code,
        "plan": plan_dict(plan), "plan_text": describe(plan),
        "result": None if result is None else {"request_id": result.request_id, "done": result.done,
                                               "message": result.message}})


def _confirmed(args: argparse.Namespace) -> bool:
    if args.yes:
        return True
    if not sys.stdin.isatty():
        raise ConfigurationError("not confirmed: pass --yes to replay without a prompt")
    # The prompt on stderr: with --json, stdout holds only the JSON object.
    return ask_yes("go ahead? [y/N] ", sys.stderr)


def run(args: argparse.Namespace) -> int:
    settings, start = _checked(args)
    with ProgressView() as view:
        plan = plan_replay(settings, args.service, from_offset=start.offset, from_time_ms=start.time_ms,
                           from_lsn=start.lsn, accept_gap=args.accept_gap, progress=view)
    if not args.json:
        print(describe(plan))
    elif not args.dry_run and not args.yes:
        print(describe(plan), file=sys.stderr)  # what is being confirmed, beside the prompt
    if args.dry_run:
        if args.json:
            print(to_json(plan, None, dry_run=True, code=exit_codes.OK))
        return exit_codes.OK
    if not _confirmed(args):
        if args.json:
            print(to_json(plan, None, dry_run=False, code=exit_codes.DIFFERENT))
        else:
            print("nothing done")
        return exit_codes.DIFFERENT
    result = submit_replay(settings, plan, wait=args.wait)
    code = exit_codes.OK if result.done else exit_codes.DIFFERENT
    print(to_json(plan, result, dry_run=False, code=code) if args.json else result.message)
    return code

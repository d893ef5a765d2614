"""`splitter replay`: rewind one service in the change log and re-apply from there."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from splitter.cli.options import SharedOptions, settings_from
from splitter.core import exit_codes
from splitter.core.errors import ConfigurationError
from splitter.core.lsn import str_to_lsn
from splitter.ops.replay import describe, parse_time, plan_replay, submit


def register(sub: Any, shared: SharedOptions) -> None:
    p = sub.add_parser("replay", parents=shared.client,
                       help="rewind one service in the change log and re-apply from there (others keep streaming)")
    p.add_argument("--service", required=True)
    p.add_argument("--from-offset", type=int)
    p.add_argument("--from-time", help="ISO 8601 time (UTC if no zone)")
    p.add_argument("--from-lsn", help="source LSN, e.g. 0/16B3748")
    p.add_argument("--dry-run", action="store_true", help="say what would be re-applied, change nothing")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--accept-gap", action="store_true",
                   help="allow starting past what the service applied (records gone from the log); then backfill")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    given = [x is not None for x in (args.from_offset, args.from_time, args.from_lsn)]
    if sum(given) != 1:
        raise ConfigurationError("give exactly one of --from-offset, --from-time, --from-lsn")
    plan = plan_replay(settings, args.service, from_offset=args.from_offset,
                       from_time_ms=parse_time(args.from_time) if args.from_time else None,
                       from_lsn=str_to_lsn(args.from_lsn) if args.from_lsn else None, accept_gap=args.accept_gap)
    print(describe(plan))
    if args.dry_run:
        return exit_codes.OK
    if not args.yes:
        if not sys.stdin.isatty():
            raise ConfigurationError("not confirmed: pass --yes to replay without a prompt")
        if input("go ahead? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing done")
            return exit_codes.DIFFERENT
    print(submit(settings, plan))
    return exit_codes.OK

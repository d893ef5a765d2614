"""`splitter dlq list|show|retry|drop`: a service's dead letters."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from splitter.cli.options import SharedOptions, add_command, ask_yes, settings_from
from splitter.core import exit_codes
from splitter.core.errors import ConfigurationError
from splitter.ops.dlq import list_letters, request_action, show_letters


def register(sub: Any, shared: SharedOptions) -> None:
    p = add_command(
        sub, "dlq", parents=shared.client,
        summary="list, show, retry or drop a service's dead letters",
        description="Dead letters are the changes a service database refused (a constraint, a type) and its "
                    "topology said to set aside (on_error = \"dead_letter\", of the service or of the table). "
                    "List or show them; retry them "
                    "once the cause is fixed, or drop them for good. Retry and drop are done by the service's "
                    "running worker, which this command asks and waits for.",
        examples=["splitter dlq list --service post",
                  "splitter dlq show --service post --id 3",
                  "splitter dlq retry --service post --id 3 --id 4"])
    p.add_argument("action", choices=["list", "show", "retry", "drop"],
                   help="list: the open ones (with --all every one); show: whole records (--id); retry: apply "
                        "them again; drop: discard them (asks, or --yes)")
    p.add_argument("--service", required=True, metavar="SERVICE", help="the service whose dead letters these are")
    p.add_argument("--id", type=int, action="append", help="only these dead letters (repeatable)")
    p.add_argument("--all", action="store_true", help="list: include retried and dropped ones")
    p.add_argument("--json", action="store_true",
                   help="list, retry, drop: one JSON object on stdout (show always prints JSON)")
    p.add_argument("--yes", action="store_true", help="drop: do not ask")
    p.add_argument("--wait", type=float, default=60.0,
                   help="retry, drop: seconds to wait for the worker to do it (default 60)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    ids = args.id or None
    if args.action == "list":
        return list_letters(settings, args.service, args.all, args.json)
    if args.action == "show":
        if not ids:
            raise ConfigurationError("dlq show needs --id")
        return show_letters(settings, args.service, ids)
    if args.action == "drop" and not args.yes:
        if not sys.stdin.isatty():
            raise ConfigurationError("dropping dead letters loses those changes: pass --yes to confirm")
        what = ", ".join(map(str, ids)) if ids else "ALL open"
        if not ask_yes(f"drop dead letter(s) {what} of service {args.service}? [y/N] "):
            return exit_codes.DIFFERENT
    return request_action(settings, args.service, "dlq_retry" if args.action == "retry" else "dlq_drop", ids,
                          args.wait, args.json)

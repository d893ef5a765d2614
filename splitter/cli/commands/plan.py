"""`splitter plan`: the routing table and every problem found before data moves."""

from __future__ import annotations

import argparse
from typing import Any

from splitter.cli.options import SharedOptions, settings_from
from splitter.ops.plan import run_plan


def register(sub: Any, shared: SharedOptions) -> None:
    p = sub.add_parser("plan", help="show the routing table and every problem found before data moves",
                       parents=shared.client)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return int(run_plan(settings_from(args), json_output=args.json))

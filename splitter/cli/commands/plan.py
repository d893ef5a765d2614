"""`splitter plan`: the routing table and every problem found before data moves."""

from __future__ import annotations

import argparse
from typing import Any

from splitter.cli.options import SharedOptions, add_command, settings_from
from splitter.ops.plan import run_plan


def register(sub: Any, shared: SharedOptions) -> None:
    p = add_command(
        sub, "plan", parents=shared.client,
        summary="show the routing table and every problem found before data moves",
        description="Load the topology, read the source and every service database, and show where each "
                    "source table and column goes, with every problem that would stop the pipeline or lose "
                    "data (missing tables or columns, types that do not fit, keys, privileges). Changes "
                    "nothing. Exit 0 if nothing blocks, non-zero otherwise.",
        examples=["splitter plan", "splitter plan --topology ./topology.py --json"])
    p.add_argument("--json", action="store_true", help="machine-readable report on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return int(run_plan(settings_from(args), json_output=args.json))

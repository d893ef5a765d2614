"""`splitter grants`: print the SQL that creates splitter's role and grants exactly what it needs."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, TextIO

from splitter.cli.options import SharedOptions, settings_from
from splitter.core import exit_codes
from splitter.ops.grants import DEFAULT_ROLE, grants_script


def register(sub: Any, shared: SharedOptions) -> None:
    p = sub.add_parser(
        "grants", parents=shared.client,
        help="print the psql script (run as a superuser) that creates splitter's role with exactly the "
             "privileges the topology needs")
    p.add_argument("--role", default=DEFAULT_ROLE, help=f"the role splitter logs in as (default {DEFAULT_ROLE})")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    if not (args.kafka or os.environ.get("SPLITTER_KAFKA")):
        args.kafka = "localhost:9092"  # Settings want a broker; the grants never touch one
    (out or sys.stdout).write(grants_script(settings_from(args), args.role))
    return exit_codes.OK

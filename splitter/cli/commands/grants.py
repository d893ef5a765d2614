"""`splitter grants`: print the SQL that creates splitter's role and grants exactly what it needs."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, TextIO

from splitter.cli.options import SharedOptions, add_command, settings_from
from splitter.core import exit_codes
from splitter.ops.grants import DEFAULT_ROLE, grants_script


def register(sub: Any, shared: SharedOptions) -> None:
    p = add_command(
        sub, "grants", parents=shared.client,
        summary="print the psql script (run as a superuser) that creates splitter's role with exactly the "
                "privileges the topology needs",
        description="Print, on stdout, a psql script that creates (or updates) the role splitter logs in as and "
                    "grants it exactly what the topology needs in the source and in each service database. It "
                    "is written from the topology and the DSNs alone (no database or broker is contacted); run "
                    "it as a superuser, again after the topology changes.",
        examples=["splitter grants > splitter-role.sql",
                  "SPLITTER_DB_PASSWORD=... psql -v ON_ERROR_STOP=1 -U postgres -d postgres -f splitter-role.sql",
                  "splitter grants --role splitter_prod --topology ./topology.py"])
    p.add_argument("--role", default=DEFAULT_ROLE, help=f"the role splitter logs in as (default {DEFAULT_ROLE})")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    if not (args.kafka or os.environ.get("SPLITTER_KAFKA")):
        args.kafka = "localhost:9092"  # Settings want a broker; the grants never touch one
    (out or sys.stdout).write(grants_script(settings_from(args), args.role))
    return exit_codes.OK

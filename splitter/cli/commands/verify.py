"""`splitter verify`: compare every service table with the topology's projection of the source."""

from __future__ import annotations

import argparse
from typing import Any

from splitter.cli.options import SharedOptions, add_command, settings_from
from splitter.cli.progress import ProgressView
from splitter.core import exit_codes
from splitter.ops.verify.run import DEFAULT_CHUNK_ROWS, DEFAULT_SAMPLE, DEFAULT_TIMEOUT, verify


def register(sub: Any, shared: SharedOptions) -> None:
    p = add_command(
        sub, "verify", parents=shared.client,
        summary="compare every service table with the topology's projection of the source, while running",
        description="Compare each service table with the topology's projection of its source table at one "
                    "consistent point, while the pipeline runs and the source takes writes: the tables are "
                    "hashed in chunks of rows on both sides, and only the rows of chunks that differ are read. "
                    "Progress (rows of about how many, by the catalog's estimates; the table) goes to stderr. "
                    "Exit 0 only if nothing differs, 1 if something does.",
        examples=["splitter verify",
                  "splitter verify --service post --table posts --json",
                  "splitter verify --as-is --chunk-rows 50000"])
    p.add_argument("--service", action="append", metavar="SERVICE",
                   help="verify only this service's tables (repeatable; default: every service)")
    p.add_argument("--table", action="append",
                   help="verify these tables only (repeatable): 'posts', 'post.posts' or 'interaction.follows'")
    p.add_argument("--json", action="store_true", help="machine-readable report on stdout")
    p.add_argument("--sample", type=int, default=DEFAULT_SAMPLE,
                   help=f"keys to show of each kind of difference (default {DEFAULT_SAMPLE})")
    p.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS,
                   help=f"rows per hashed chunk (default {DEFAULT_CHUNK_ROWS:,}); smaller chunks read fewer rows "
                        f"when some differ")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help=f"seconds to wait for each worker to hold (default {DEFAULT_TIMEOUT:g})")
    p.add_argument("--as-is", dest="consistent", action="store_false",
                   help="no snapshot and no hold: compare as the databases are (only for an idle source)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    with ProgressView() as view:
        report = verify(settings, services=args.service, tables=args.table, sample=args.sample,
                        chunk_rows=args.chunk_rows, timeout=args.timeout, progress=view,
                        consistent=args.consistent)
    print(report.to_json() if args.json else report.render())
    return exit_codes.OK if report.ok else exit_codes.DIFFERENT

"""`splitter backfill`: re-copy one table into one service database while streaming continues."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from splitter.cli.options import SharedOptions, add_command, settings_from
from splitter.cli.progress import ProgressView
from splitter.core import exit_codes
from splitter.ops.backfill import DEFAULT_CHUNK_ROWS, BackfillResult, run_backfill


def register(sub: Any, shared: SharedOptions) -> None:
    p = add_command(
        sub, "backfill", parents=shared.client,
        summary="re-copy one table into one service database while streaming continues",
        description="Copy one of a service's tables again from the source, in chunks of rows in key order, while "
                    "capture and the service's worker keep streaming (its worker must run: it applies each chunk "
                    "between two watermarks in the change log, so a copied row never overwrites a newer change). "
                    "By default each chunk also removes the service's rows in its key range that the source no "
                    "longer has. A backfill that stopped resumes from its last applied chunk. Progress (rows, "
                    "chunks, rate, ETA) goes to stderr; the result to stdout.",
        examples=["splitter backfill --service post --table posts",
                  "splitter backfill --service post --table posts --rate 5000 --json",
                  "splitter backfill --service interaction --table post_saves --restart --no-delete"])
    p.add_argument("--service", required=True, metavar="SERVICE", help="the service whose table is copied again")
    p.add_argument("--table", required=True, help="the service's table (as named in topology.py)")
    p.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS,
                   help=f"source rows per chunk, each between its own pair of watermarks (default "
                        f"{DEFAULT_CHUNK_ROWS:,})")
    p.add_argument("--rate", type=float, default=None, help="at most this many rows per second")
    p.add_argument("--restart", action="store_true", help="start from the first key instead of resuming")
    p.add_argument("--no-delete", dest="deletes", action="store_false",
                   help="only copy: leave the service's rows that the source no longer has (by default each "
                        "chunk removes those in its key range)")
    p.add_argument("--json", action="store_true", help="the result as one JSON object on stdout")
    p.set_defaults(func=run)


def to_json(result: BackfillResult) -> str:
    """The result of `splitter backfill --json` (README "JSON output" describes each field)."""
    fields = asdict(result)
    fields["seconds"] = round(result.seconds, 3)
    return json.dumps({"command": "backfill", **fields})


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    with ProgressView() as view:
        result = run_backfill(settings, args.service, args.table, chunk_rows=args.chunk_rows, rate=args.rate,
                              restart=args.restart, progress=view, deletes=args.deletes)
    if args.json:
        print(to_json(result))
        return exit_codes.OK
    deleted = f"{result.rows_deleted} deleted (gone from the source)" if args.deletes else "none deleted (--no-delete)"
    print(f"backfill {result.job_id} of {args.service}.{args.table}: {result.rows_copied} rows copied, "
          f"{result.rows_skipped} left to the stream (changed while copying), {deleted}, {result.chunks} chunks, "
          f"{result.seconds:.1f}s")
    return exit_codes.OK

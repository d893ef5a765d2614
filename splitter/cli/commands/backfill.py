"""`splitter backfill`: re-copy one table into one service database while streaming continues."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from splitter.cli.options import SharedOptions, settings_from
from splitter.core import exit_codes
from splitter.ops.backfill import DEFAULT_CHUNK_ROWS, run_backfill


def register(sub: Any, shared: SharedOptions) -> None:
    p = sub.add_parser("backfill", parents=shared.client,
                       help="re-copy one table into one service database while streaming continues")
    p.add_argument("--service", required=True)
    p.add_argument("--table", required=True, help="the service's table (as named in topology.py)")
    p.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS)
    p.add_argument("--rate", type=float, default=None, help="at most this many rows per second")
    p.add_argument("--restart", action="store_true", help="start from the first key instead of resuming")
    p.add_argument("--no-delete", dest="deletes", action="store_false",
                   help="only copy: leave the service's rows that the source no longer has (by default each "
                        "chunk removes those in its key range)")
    p.set_defaults(func=run)


def _progress_bar(done: int, total: int, elapsed: float) -> None:
    if not sys.stderr.isatty():
        return
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = (total - done) / rate if rate > 0 and total > done else 0.0
    pct = min(100.0, 100.0 * done / total) if total else 100.0
    sys.stderr.write(f"\r  {done} / ~{total} rows ({pct:5.1f}%), {rate:,.0f} rows/s, ETA {eta:,.0f}s   ")
    sys.stderr.flush()


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    result = run_backfill(settings, args.service, args.table, chunk_rows=args.chunk_rows, rate=args.rate,
                          restart=args.restart, progress=_progress_bar, deletes=args.deletes)
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    deleted = f"{result.rows_deleted} deleted (gone from the source)" if args.deletes else "none deleted (--no-delete)"
    print(f"backfill {result.job_id} of {args.service}.{args.table}: {result.rows_copied} rows copied, "
          f"{result.rows_skipped} left to the stream (changed while copying), {deleted}, {result.chunks} chunks, "
          f"{result.seconds:.1f}s")
    return exit_codes.OK

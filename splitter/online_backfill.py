"""`splitter backfill --service S --table T`: re-copy one table into one service database while streaming.

Owns: the copying side of the DBLog watermark algorithm.  For each chunk of the source table, in
primary-key order: write a low watermark into the change log (`pg_logical_emit_message`), read the
chunk, hand its rows to the service database, write a high watermark, and wait until the worker has
applied the chunk.  The worker, reading the log in order, drops from the chunk every row the stream
changed between the two watermarks (the stream carries newer values), so a copied value never
overwrites a newer one, and the service's stream is never paused.  Progress lives in the service
database (`splitter.backfills`), so a crashed backfill resumes from its last applied chunk; `--rate`
throttles it so it does not starve the stream.  Must not: write the service's tables itself.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from psycopg import sql

from connectors import backfill_store
from connectors.pg_sink import connect, ensure_state_schema
from connectors.pg_source import ensure_publication, relation_schema
from splitter import sqlrender
from splitter.config import Settings
from splitter.errors import ConfigurationError, RetryableError
from splitter.topology import Route

PREFIX = "splitter.backfill"


@dataclass(frozen=True)
class BackfillResult:
    job_id: int
    chunks: int
    rows_copied: int
    rows_skipped: int
    seconds: float


def _route(settings: Settings, service: str, table: str) -> Route:
    svc = settings.topology.service(service)
    routes = [r for r in settings.topology.routes_for(svc)
              if table in (r.table.name, f"{r.target_schema}.{r.target_table}", r.target_table)]
    if not routes:
        names = ", ".join(r.table.name for r in settings.topology.routes_for(svc))
        raise ConfigurationError(f"service {service} has no table {table!r} in the topology (it has: {names})")
    return routes[0]


def _emit(conn: psycopg.Connection, mark: dict[str, Any]) -> None:
    conn.execute("SELECT pg_logical_emit_message(false, %s, %s)", (PREFIX, orjson.dumps(mark).decode()))


def run_backfill(settings: Settings, service: str, table: str, *, chunk_rows: int = 2000,
                 rate: float | None = None, chunk_timeout: float = 120.0, restart: bool = False,
                 progress: Any = None) -> BackfillResult:
    route = _route(settings, service, table)
    source_table = f"{route.source_schema}.{route.source_table}"
    started = time.monotonic()
    with connect(settings.source_dsn, "the source database", autocommit=True,
                 application_name="splitter-backfill") as source, \
         connect(settings.target_dsn(service), f"database of service {service}", autocommit=True,
                 application_name="splitter-backfill") as target:
        ensure_state_schema(target)
        relation = relation_schema(source, route.source_schema, route.source_table)
        if not relation.key_columns:
            raise ConfigurationError(f"source table {source_table} has no primary key: it cannot be copied in chunks")
        # The stream must carry the table's changes before the first low watermark.
        ensure_publication(source, settings.publication, settings.topology.source_tables())
        job = None if restart else backfill_store.running_job(target, service, source_table)
        if job is not None and job.relation_header != relation.header_bytes().decode():
            job = None  # the table changed shape since: start again
        if job is None:
            job = backfill_store.start_job(target, service, source_table, relation.header_bytes().decode(),
                                           chunk_rows)
        total = _estimate_rows(source, route)
        key_cols = relation.key_columns
        key_types = {c.name: c.sql_type for c in relation.columns}
        select_cols = sql.SQL(", ").join(
            sql.SQL("{}::text AS {}").format(sql.Identifier(c.name), sql.Identifier(c.name)) for c in relation.columns)
        order = sql.SQL(", ").join(sql.Identifier(k) for k in key_cols)
        chunk = job.chunks_done
        last_key = job.last_key
        copied, skipped = job.rows_copied, job.rows_skipped
        while True:
            chunk += 1
            mark = {"service": service, "table": source_table, "job": job.id, "chunk": chunk}
            _emit(source, {**mark, "mark": "low"})
            where: sql.Composable = sql.SQL("")
            params: list[Any] = []
            if last_key is not None:
                where = sql.SQL("WHERE ({}) > ({})").format(order, sql.SQL(", ").join(
                    sql.SQL("%s::{}").format(sqlrender.checked_type(key_types[k])) for k in key_cols))
                params = list(last_key)
            rows = source.execute(sql.SQL("SELECT {} FROM {} {} ORDER BY {} LIMIT {}").format(
                select_cols, sqlrender.qualified(route.source_schema, route.source_table), where, order,
                sql.Literal(job.chunk_rows)), params).fetchall()
            names = [c.name for c in relation.columns]
            with target.transaction():
                backfill_store.put_chunk(target, job.id, chunk, (dict(zip(names, r, strict=True)) for r in rows))
            final = len(rows) < job.chunk_rows
            _emit(source, {**mark, "mark": "high", "final": final})
            done = _wait_applied(target, job.id, chunk, chunk_timeout)
            if not done:
                chunk -= 1  # the worker did not see this chunk's watermarks (restarted mid-chunk): send it again
                continue
            state = backfill_store.job(target, job.id)
            assert state is not None
            copied, skipped, last_key = state.rows_copied, state.rows_skipped, state.last_key
            if progress is not None:
                progress(copied + skipped, total, time.monotonic() - started)
            if final:
                break
            if rate:
                time.sleep(len(rows) / rate)
    return BackfillResult(job.id, chunk, copied, skipped, time.monotonic() - started)


def _estimate_rows(conn: psycopg.Connection, route: Route) -> int:
    row = conn.execute("SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = %s::regclass",
                       (f'"{route.source_schema}"."{route.source_table}"',)).fetchone()
    return int(row[0]) if row else 0


def _wait_applied(conn: psycopg.Connection, job_id: int, chunk: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = backfill_store.job(conn, job_id)
        if state is None:
            raise RetryableError(f"backfill job {job_id} disappeared from the service database")
        if state.chunks_done >= chunk:
            return True
        time.sleep(0.05)
    return False


def _progress_bar(done: int, total: int, elapsed: float) -> None:
    if not sys.stderr.isatty():
        return
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = (total - done) / rate if rate > 0 and total > done else 0.0
    pct = min(100.0, 100.0 * done / total) if total else 100.0
    sys.stderr.write(f"\r  {done} / ~{total} rows ({pct:5.1f}%), {rate:,.0f} rows/s, ETA {eta:,.0f}s   ")
    sys.stderr.flush()


def cmd_backfill(args: argparse.Namespace) -> int:
    from splitter.cli import _settings

    settings = _settings(args)
    result = run_backfill(settings, args.service, args.table, chunk_rows=args.chunk_rows, rate=args.rate,
                          restart=args.restart, progress=_progress_bar)
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    print(f"backfill {result.job_id} of {args.service}.{args.table}: {result.rows_copied} rows copied, "
          f"{result.rows_skipped} left to the stream (changed while copying), {result.chunks} chunks, "
          f"{result.seconds:.1f}s")
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("backfill", parents=[common],
                       help="re-copy one table into one service database while streaming continues")
    p.add_argument("--service", required=True)
    p.add_argument("--table", required=True, help="the service's table (as named in topology.py)")
    p.add_argument("--chunk-rows", type=int, default=2000)
    p.add_argument("--rate", type=float, default=None, help="at most this many rows per second")
    p.add_argument("--restart", action="store_true", help="start from the first key instead of resuming")
    p.set_defaults(func=cmd_backfill)

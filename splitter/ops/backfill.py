"""`splitter backfill --service S --table T`: re-copy one table into one service database while streaming.

Owns: the copying side of the DBLog watermark algorithm.  For each chunk of the source table, in
primary-key order: write a low watermark into the change log (`pg_logical_emit_message`), read the
chunk (once the transactions open at the low watermark have ended), hand its rows to the service
database, write a high watermark, and wait until the worker has applied the chunk.  The worker,
reading the log in order, drops from the chunk every row the stream changed between the two
watermarks (the stream carries newer values), so a copied value never overwrites a newer one, and
the service's stream is never paused.  Rows the stream could not rebuild meanwhile (an update with
unchanged TOASTed columns that moved a row the copy had not reached to a key it had passed) are noted
by the worker and copied again in repair chunks at the end.  Progress lives in the service database
(`splitter.backfills`), so a crashed backfill resumes from its last applied chunk; `--rate` throttles
it so it does not starve the stream.  Must not: write the service's tables itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from psycopg import sql

from connectors.pg.client import connect
from connectors.pg.source import ensure_publication, relation_schema
from connectors.pg.state import backfills as backfill_store
from connectors.pg.state.schema import ensure_state_schema
from splitter.core import messages
from splitter.core.errors import ConfigurationError, RetryableError
from splitter.pipeline.config import Settings
from splitter.topology import sqlrender
from splitter.topology.model import Route


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
    conn.execute("SELECT pg_logical_emit_message(false, %s, %s)", (messages.BACKFILL, orjson.dumps(mark).decode()))


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
        backfill_store.set_estimate(target, job.id, total)
        key_cols = relation.key_columns
        key_types = {c.name: sqlrender.checked_type(c.sql_type) for c in relation.columns if c.name in key_cols}
        select_cols = sql.SQL(", ").join(
            sql.SQL("{}::text AS {}").format(sql.Identifier(c.name), sql.Identifier(c.name)) for c in relation.columns)
        order = sql.SQL(", ").join(sql.Identifier(k) for k in key_cols)
        names = [c.name for c in relation.columns]
        source_relation = sqlrender.qualified(route.source_schema, route.source_table)

        def copy_chunk(number: int, where: sql.Composable, params: list[Any], extra: dict[str, Any]) -> int | None:
            """One chunk between its watermarks; the rows read, or None if the worker did not apply it."""
            mark = {"service": service, "table": source_table, "job": job.id, "chunk": number}
            _emit(source, {**mark, "mark": "low"})
            _wait_for_transactions_before(source, chunk_timeout)
            rows = source.execute(sql.SQL("SELECT {} FROM {} {} ORDER BY {} LIMIT {}").format(
                select_cols, source_relation, where, order, sql.Literal(job.chunk_rows)), params).fetchall()
            with target.transaction():
                backfill_store.put_chunk(target, job.id, number, (dict(zip(names, r, strict=True)) for r in rows))
            final = len(rows) < job.chunk_rows or "repair" in extra
            _emit(source, {**mark, **extra, "mark": "high", "final": final})
            return len(rows) if _wait_applied(target, job.id, number, chunk_timeout) else None

        chunk = job.chunks_done
        last_key = job.last_key
        copied, skipped = job.rows_copied, job.rows_skipped
        key_tuple = sql.SQL("({})").format(order)
        typed_params = sql.SQL(", ").join(sql.SQL("%s::{}").format(key_types[k]) for k in key_cols)
        scanning = True
        while True:
            chunk += 1
            if scanning:
                where: sql.Composable = sql.SQL("")
                params: list[Any] = []
                if last_key is not None:
                    where = sql.SQL("WHERE {} > ({})").format(key_tuple, typed_params)
                    params = list(last_key)
                extra: dict[str, Any] = {}
            else:
                # Rows the stream could not rebuild while the copy ran (see connectors.backfill_store): copy
                # those keys again, in a window of their own, until none is left.
                repair = backfill_store.missed_keys(target, job.id, job.chunk_rows)
                where = sql.SQL("WHERE {} IN (SELECT {} FROM jsonb_array_elements(%s::jsonb) AS e)").format(
                    key_tuple, sql.SQL(", ").join(sql.SQL("(e->>{})::{}").format(sql.Literal(i), key_types[k])
                                                  for i, k in enumerate(key_cols)))
                params = [orjson.dumps(repair).decode()]
                extra = {"repair": repair}
            read = copy_chunk(chunk, where, params, extra)
            if read is None:
                chunk -= 1  # the worker did not see this chunk's watermarks (restarted mid-chunk): send it again
                continue
            state = backfill_store.job(target, job.id)
            assert state is not None
            copied, skipped, last_key = state.rows_copied, state.rows_skipped, state.last_key
            if progress is not None:
                progress(copied + skipped, total, time.monotonic() - started)
            if state.status == "done":
                break
            scanning = scanning and read == job.chunk_rows
            if rate:
                time.sleep(read / rate)
    return BackfillResult(job.id, chunk, copied, skipped, time.monotonic() - started)


def _estimate_rows(conn: psycopg.Connection, route: Route) -> int:
    row = conn.execute("SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = %s::regclass",
                       (f'"{route.source_schema}"."{route.source_table}"',)).fetchone()
    return int(row[0]) if row else 0


def _wait_for_transactions_before(conn: psycopg.Connection, timeout: float) -> None:
    """Wait until every transaction running when the low watermark was written has ended.

    A transaction whose commit record precedes the low watermark in the log can still be invisible to a
    snapshot taken just after it (PostgreSQL writes the commit record before it shows the transaction
    as committed).  Its change would then be neither in the chunk nor inside the window, and the copy
    would bring back the older row.  Once those transactions have ended, every transaction the chunk's
    snapshot does not see commits after the low watermark, where the worker notes its keys.
    """
    # Transaction ids are handed out in order: every writer running at the watermark has one below the id
    # taken now, and the oldest running id (the snapshot's xmin) passes it once they have all ended.
    taken = conn.execute("SELECT pg_current_xact_id()::text").fetchone()
    assert taken is not None
    deadline = time.monotonic() + timeout
    while True:
        row = conn.execute("SELECT pg_snapshot_xmin(pg_current_snapshot()) >= %s::xid8", (taken[0],)).fetchone()
        if row and row[0]:
            return
        if time.monotonic() >= deadline:
            holders = conn.execute(
                "SELECT string_agg(format('xid %s (pid %s)', backend_xid, pid), ', ' ORDER BY age(backend_xid) DESC) "
                "FROM pg_stat_activity WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()").fetchone()
            raise RetryableError(
                f"transaction(s) {holders[0] if holders and holders[0] else '(ended just now)'} on the source stayed "
                f"open for {timeout:.0f}s after the backfill's low watermark; the chunk waits for the writers open "
                f"at the watermark to end")
        time.sleep(0.01)


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

"""Backfill: rows/s of splitter's initial copy vs plain `psql COPY (SELECT projection) | psql COPY FROM`.

Measures, on the same source data and into the same seven (empty) service databases:

* baseline: for every route, `psql -c "COPY (<the route's projection>) TO STDOUT" | psql -c "COPY target
  (cols) FROM STDIN"` -- the same SELECT splitter renders (`sqlrender.backfill_select`), so the server
  does the same work; services run 4 at a time as splitter's pool does, routes of one service one after
  the other; target sessions use session_replication_role=replica like splitter's.
* splitter: `splitter.pipeline.initial_copy` from the snapshot a freshly created pgoutput slot exports
  (only the copy is timed, not the slot creation).

Rows are target rows written (fan-out counts once per target table).  The slot this creates is the
one the end-to-end benchmark streams from, and the checkpoints it writes are its starting point.
"""

from __future__ import annotations

import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
from psycopg import sql

from bench.common import Servers, pg_bin
from connectors.pg.catalog import target_columns
from connectors.pg.source import ReplicationConnection, relation_schema
from splitter.pipeline import initial_copy as backfill
from splitter.pipeline.config import Settings
from splitter.topology import sqlrender
from splitter.topology.model import Route, Service


def _route_sql(settings: Settings, route: Route) -> tuple[str, str]:
    """(COPY ... TO STDOUT on the source, COPY ... FROM STDIN on the target) for one route."""
    with psycopg.connect(settings.source_dsn) as src, psycopg.connect(settings.target_dsn(route.service.name)) as tgt:
        relation = relation_schema(src, route.source_schema, route.source_table)
        columns = target_columns(tgt, route)
        select = sqlrender.backfill_select(route, relation.columns, columns)
        out = sql.SQL("COPY ({}) TO STDOUT").format(select).as_string(src)
        into = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sqlrender.qualified(route.target_schema, route.target_table),
            sql.SQL(", ").join(sql.Identifier(c.name) for c in columns)).as_string(tgt)
    return out, into


def _psql_pipe(settings: Settings, service: Service, statements: dict[str, tuple[str, str]]) -> int:
    env = dict(os.environ, PGOPTIONS="-c session_replication_role=replica")
    rows = 0
    for route in settings.topology.routes_for(service):
        out_sql, in_sql = statements[route.describe()]
        psql = pg_bin("psql")
        producer = subprocess.Popen([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", settings.source_dsn,
                                     "-c", out_sql], stdout=subprocess.PIPE)
        consumer = subprocess.run([psql, "-X", "-v", "ON_ERROR_STOP=1", "-d", settings.target_dsn(service.name),
                                   "-c", in_sql], stdin=producer.stdout, capture_output=True, env=env, check=True)
        assert producer.stdout is not None
        producer.stdout.close()
        if producer.wait() != 0:
            raise RuntimeError(f"psql COPY TO failed for {route.describe()}")
        rows += int(consumer.stdout.split()[-1])  # "COPY <n>"
    return rows


def _truncate_targets(settings: Settings) -> None:
    for service in settings.topology.services:
        with psycopg.connect(settings.target_dsn(service.name), autocommit=True) as conn:
            for route in settings.topology.routes_for(service):
                target = sqlrender.qualified(route.target_schema, route.target_table)
                conn.execute(sql.SQL("TRUNCATE {}").format(target))


def run(servers: Servers, settings: Settings) -> dict[str, Any]:
    services = list(settings.topology.services)
    # Rendered before the clock starts (splitter's copy_route reads the same catalog inside its timing).
    statements = {r.describe(): _route_sql(settings, r) for r in settings.topology.routes()}
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=min(4, len(services))) as pool:
        base_rows = sum(pool.map(lambda s: _psql_pipe(settings, s, statements), services))
    base_s = time.monotonic() - started
    _truncate_targets(settings)

    to_copy = backfill.plan_initial_copy(settings, None)
    repl = ReplicationConnection(settings.source_dsn)
    try:
        consistent, snapshot = repl.create_slot(settings.slot)
        started = time.monotonic()
        results = backfill.initial_copy(settings, snapshot, consistent, to_copy, progress=lambda _m: None)
        split_s = time.monotonic() - started
    finally:
        repl.close()
    split_rows = sum(sum(r.rows.values()) for r in results)
    base_rate, split_rate = base_rows / base_s, split_rows / split_s
    return {
        "rows": split_rows,
        "baseline_rows": base_rows,
        "baseline_seconds": round(base_s, 2),
        "baseline_rows_per_s": round(base_rate),
        "splitter_seconds": round(split_s, 2),
        "splitter_rows_per_s": round(split_rate),
        "per_service_seconds": {r.service: round(r.seconds, 2) for r in results},
        "ratio": round(split_rate / base_rate, 3),
        "goal": 0.8,
        "consistent_lsn": consistent,
    }


def reset(settings: Settings) -> None:
    """Start the pipeline over (untimed): drop the slot, empty the targets, copy again from a new slot.

    Used after the capture benchmark so that the end-to-end run does not start with its burst as backlog.
    """
    with psycopg.connect(settings.source_dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
                     (settings.slot,))
    _truncate_targets(settings)
    for service in settings.topology.services:
        with psycopg.connect(settings.target_dsn(service.name), autocommit=True) as conn:
            conn.execute("DELETE FROM splitter.checkpoints")
    repl = ReplicationConnection(settings.source_dsn)
    try:
        consistent, snapshot = repl.create_slot(settings.slot)
        backfill.initial_copy(settings, snapshot, consistent, list(settings.topology.services),
                              progress=lambda _m: None)
    finally:
        repl.close()

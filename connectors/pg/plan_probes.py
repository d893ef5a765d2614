"""What PostgreSQL says of the topology's SQL before any row moves: `splitter plan`'s probes.

Owns: planning a route's projection over the source table with LIMIT 0 (`projection_types`: the result
type of each expression, or the server's refusal; `filter_type`: the same of its row filter) and planning
the apply's INSERT of one column in the service database (`explain_apply`).  Must not: write anything
(LIMIT 0 and EXPLAIN only) or judge what it finds (`splitter.ops.plan.rules` does).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from connectors.pg.inspect import QueryFailure, server_message
from splitter.core.envelope import RelationSchema
from splitter.topology.expressions import uses_default
from splitter.topology.model import Route
from splitter.topology.sqlrender import (
    ROWS_ALL,
    TargetColumn,
    checked_type,
    projection,
    qualified,
    source_table_relation,
    topology_sql,
)

#: SQLSTATE generated_always: a GENERATED ALWAYS column refuses a value other than its own.
GENERATED_ALWAYS = "428C9"


def _result_types(conn: psycopg.Connection[Any], query: sql.Composed,
                  dsn: str) -> list[tuple[int, int]] | QueryFailure:
    """Run `query`; the (type oid, typmod) of each result column, or why it failed."""
    try:
        with conn.cursor() as cur:
            cur.execute(query)
            res = cur.pgresult
            if res is None:
                return []
            return [(res.ftype(i), res.fmod(i)) for i in range(res.nfields)]
    except psycopg.Error as exc:
        return QueryFailure(server_message(exc, dsn), getattr(exc, "sqlstate", None))


def projection_types(conn: psycopg.Connection[Any], route: Route, relation: RelationSchema, columns: Sequence[str],
                     dsn: str) -> list[tuple[int, int]] | QueryFailure:
    """Plan the route's projection of `columns` over the source table (backfill's own SELECT) with LIMIT 0:
    the (type oid, typmod) of each column's result, or why PostgreSQL refused it."""
    rel_sql = source_table_relation(route.source_schema, route.source_table, relation.columns)
    # NULL for DEFAULT: a bare literal takes its type from its context as NULL does, so the result types are
    # the ones the target's default gives (the target is read after the source).
    probes = [TargetColumn(c, default="NULL" if uses_default(route.table.columns[c]) else None) for c in columns]
    query = sql.SQL("{} LIMIT 0").format(projection(route, probes, rel_sql, rows=ROWS_ALL))
    return _result_types(conn, query, dsn)


def filter_type(conn: psycopg.Connection[Any], route: Route, relation: RelationSchema,
                dsn: str) -> list[tuple[int, int]] | QueryFailure:
    """Plan the route's row filter over the source table with LIMIT 0: its result's (type oid, typmod)."""
    assert route.table.where is not None
    rel_sql = source_table_relation(route.source_schema, route.source_table, relation.columns)
    query = sql.SQL("SELECT ({}) FROM ({}) AS src LIMIT 0").format(topology_sql(route.table.where), rel_sql)
    return _result_types(conn, query, dsn)


def _typed_relation(relation: RelationSchema) -> sql.Composed:
    """A relation with the source row's columns and types and no rows: what the apply's staging yields."""
    return sql.SQL("SELECT {} LIMIT 0").format(sql.SQL(", ").join(
        sql.SQL("NULL::{} AS {}").format(checked_type(c.sql_type), sql.Identifier(c.name))
        for c in relation.columns))


def explain_apply(conn: psycopg.Connection[Any], route: Route, column: TargetColumn, relation: RelationSchema,
                  dsn: str) -> QueryFailure | None:
    """Plan `EXPLAIN INSERT INTO <target> (<column>) OVERRIDING SYSTEM VALUE SELECT <expression>` over a row of
    the source's types, the way the worker's apply writes it, and for a column outside the key the UPDATE an
    upsert makes of it (a GENERATED ALWAYS identity column takes an insert's value, never an update's): None
    if PostgreSQL accepts both, else why not."""
    target = qualified(route.target_schema, route.target_table)
    projected = projection(route, [column], _typed_relation(relation))
    failure = _result_types(conn, sql.SQL("EXPLAIN INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE {}").format(
        target, sql.Identifier(column.name), projected), dsn)
    if not isinstance(failure, QueryFailure) and column.name not in route.table.key:
        update = _result_types(conn, sql.SQL("EXPLAIN UPDATE {} SET {} = p.{} FROM ({}) AS p").format(
            target, sql.Identifier(column.name), sql.Identifier(column.name), projected), dsn)
        # Only the column's own refusal: others are the table's (no replica identity in a publication, say),
        # which the table's rules report once.
        if isinstance(update, QueryFailure) and update.sqlstate == GENERATED_ALWAYS:
            failure = update
    return failure if isinstance(failure, QueryFailure) else None


__all__ = ["GENERATED_ALWAYS", "explain_apply", "filter_type", "projection_types"]

"""The initial copy of one route again, in batches and then row by row, after the service database refused its COPY.

Owns: reading the route's source rows at the copy's snapshot in primary-key order, each with its whole
source row (every column as the source prints it, for a dead letter) and its projection (the same
expressions as the COPY, `sqlrender.projection`), and writing the projections into the target in
batches, each in a savepoint; a batch the database refuses is written again row by row, each in a
savepoint of its own, so only the rows it refuses stay out (`copy_route_rows`).  Which rows were
refused, and why, is the result (`RefusedRow`); with `stop_at_first` the read ends at the first one.
The rows are parsed and written back by psycopg's own COPY text codec, so each value reaches the target
as the same text the plain COPY pipes.
Must not: decide what a refused row means (stored as a dead letter or fatal: the pipeline's `on_error`),
commit, or write anything but the route's target table (inside the caller's transaction).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from connectors.pg.catalog import target_columns
from connectors.pg.source import relation_schema
from splitter.core.dsn import mask_secrets
from splitter.core.envelope import RelationSchema
from splitter.core.errors import is_data_rejection
from splitter.topology import sqlrender
from splitter.topology.model import Route

#: Rows written per savepoint while nothing is refused.
BATCH_ROWS = 1000


@dataclass(frozen=True)
class RefusedRow:
    """A source row the service database refused: the row (as text), its key, and the database's reason."""

    image: dict[str, str | None]
    key: tuple[str | None, ...]
    sqlstate: str | None
    message: str  # one line: the server's message and its detail, masked
    constraint: str | None


@dataclass(frozen=True)
class RowCopy:
    relation: RelationSchema  # the source table as the dead letters describe it
    rows: int  # rows copied
    refused: list[RefusedRow]


class _Stopped(Exception):
    """Ends the source read at the first refused row (it cancels the source's COPY)."""


def refusal_message(exc: psycopg.Error, *dsns: str) -> str:
    """The server's one-line message with its detail (which names the key or value), masked."""
    diag = exc.diag
    text = " ".join((diag.message_primary or str(exc)).split())
    if diag.message_detail:
        text = f"{text} ({' '.join(diag.message_detail.split())})"
    return mask_secrets(text, *dsns)


def copy_route_rows(source: psycopg.Connection[Any], target: psycopg.Connection[Any], route: Route, *,
                    stop_at_first: bool, dsns: Sequence[str] = ()) -> RowCopy:
    """Copy `route` in savepoints of both open transactions, keeping out only the rows the target refuses.

    Errors other than a data rejection are raised as the driver's; the caller wraps them.
    """
    relation = relation_schema(source, route.source_schema, route.source_table)
    columns = target_columns(target, route)
    width = len(relation.columns)
    select = sqlrender.projection(
        route, [c.uncast() for c in columns],
        sqlrender.source_table_relation(route.source_schema, route.source_table, relation.columns),
        extra=[sql.SQL("src.{}").format(sql.Identifier(c.name)) for c in relation.columns])
    ordered = sql.SQL("COPY ({} ORDER BY {}) TO STDOUT").format(
        select, sql.SQL(", ").join(sql.SQL("src.{}").format(sql.Identifier(k)) for k in relation.key_columns))
    copy_in = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sqlrender.qualified(route.target_schema, route.target_table),
        sql.SQL(", ").join(sql.Identifier(c.name) for c in columns))
    names = [c.name for c in relation.columns]
    keys = [names.index(k) for k in relation.key_columns]
    copied = 0
    refused: list[RefusedRow] = []

    def write(rows: Sequence[tuple[Any, ...]]) -> None:
        with target.transaction(), target.cursor() as cur, cur.copy(copy_in) as inp:
            for row in rows:
                inp.write_row(row[width:])

    def flush(batch: list[tuple[Any, ...]]) -> None:
        nonlocal copied
        try:
            write(batch)
            copied += len(batch)
            return
        except psycopg.Error as exc:
            if not is_data_rejection(exc.sqlstate):
                raise
        for row in batch:
            try:
                write([row])
                copied += 1
            except psycopg.Error as exc:
                if not is_data_rejection(exc.sqlstate):
                    raise
                refused.append(RefusedRow(dict(zip(names, row[:width], strict=True)), tuple(row[i] for i in keys),
                                          exc.sqlstate, refusal_message(exc, *dsns), exc.diag.constraint_name))
                if stop_at_first:
                    raise _Stopped from exc

    try:
        with source.transaction(), source.cursor() as cur, cur.copy(ordered) as out:
            out.set_types(["text"] * (width + len(columns)))
            batch: list[tuple[Any, ...]] = []
            for row in out.rows():
                batch.append(row)
                if len(batch) >= BATCH_ROWS:
                    flush(batch)
                    batch = []
            flush(batch)
    except _Stopped:
        pass
    return RowCopy(relation, copied, refused)


__all__ = ["BATCH_ROWS", "RefusedRow", "RowCopy", "copy_route_rows", "refusal_message"]

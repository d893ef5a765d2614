"""Copying rows out of the source: the initial copy's COPY pipes and the online backfill's chunk reads.

Owns: the statements that move table rows from the source into a service database or into the
backfill's chunk store: the initial copy of one service (`ServiceCopy`: the source at the slot's exported
snapshot, the service database in one open transaction with triggers off, the service's copy lock, each
route's projection piped with COPY in a savepoint, so that a route the database refuses can be copied
again row by row (`connectors.pg.copy_rows`), the dead letters and the first checkpoint written in that
transaction), the check that a service table is empty,
and the backfill's chunk reads in primary-key order (`ChunkReader`).  Must not: decide which services or
tables need a copy, which checkpoint to write or when to commit (`splitter.pipeline.initial_copy` does),
or write watermarks (`connectors.pg.watermarks`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import psycopg
from psycopg import sql

from connectors.pg.catalog import target_columns
from connectors.pg.client import connect, lock_key, wrap_db_error
from connectors.pg.copy_rows import RowCopy, copy_route_rows, refusal_message
from connectors.pg.source import relation_schema
from connectors.pg.state import dead_letters, source_shapes
from connectors.pg.state.schema import Checkpoint, read_checkpoint, write_checkpoint
from splitter.core.dsn import SOURCE_DATABASE, mask_secrets, service_database
from splitter.core.envelope import RelationSchema
from splitter.core.errors import DataRejectedError, is_data_rejection
from splitter.topology import sqlrender
from splitter.topology.model import Route


def table_has_rows(conn: psycopg.Connection, schema: str, table: str) -> bool:
    """Whether the table holds any row."""
    query = sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sqlrender.qualified(schema, table))
    row = conn.execute(query).fetchone()
    return bool(row and row[0])


#: How many rows a copy pipes between two `on_rows` calls.
ROWS_PER_REPORT = 10_000


def copy_route(source: psycopg.Connection, target: psycopg.Connection, route: Route,
               on_rows: Callable[[int], None] | None = None) -> int:
    """Pipe `route`'s projection of its source table into its service table with COPY; the rows copied.

    `on_rows(n)` is told every `ROWS_PER_REPORT` rows how many have been piped so far (the server sends a
    COPY TO's rows one CopyData message each, and psycopg yields one message at a time)."""
    relation = relation_schema(source, route.source_schema, route.source_table)
    columns = target_columns(target, route)
    select = sqlrender.backfill_select(route, relation.columns, columns)
    copy_in = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sqlrender.qualified(route.target_schema, route.target_table),
        sql.SQL(", ").join(sql.Identifier(c.name) for c in columns))
    copy_out = sql.SQL("COPY ({}) TO STDOUT").format(select)
    with source.cursor() as out_cur, target.cursor() as in_cur:
        with out_cur.copy(copy_out) as out, in_cur.copy(copy_in) as inp:
            for piped, chunk in enumerate(out, start=1):
                inp.write(chunk)
                if on_rows is not None and piped % ROWS_PER_REPORT == 0:
                    on_rows(piped)
        return in_cur.rowcount


class ServiceCopy:
    """One service's initial copy: the source read at an exported snapshot, the service database in one
    transaction (its rows and its first checkpoint) that the caller commits or rolls back."""

    def __init__(self, source_dsn: str, target_dsn: str, service: str) -> None:
        self._dsns = (source_dsn, target_dsn)
        self._service = service
        self._what = f"initial copy of service {service} failed"
        self.source = connect(source_dsn, SOURCE_DATABASE, application_name="splitter-backfill")
        try:
            self.target = connect(target_dsn, service_database(service), application_name="splitter-backfill")
        except BaseException:
            self.source.close()
            raise

    def begin(self, snapshot: str) -> None:
        """Read the source at `snapshot`; write the service database without firing its triggers."""
        try:
            self.source.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            self.source.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
            self.target.execute("SET LOCAL session_replication_role = replica")
        except psycopg.Error as exc:
            raise wrap_db_error(exc, self._what, *self._dsns) from exc

    def claim(self) -> bool:
        """Take the service's copy lock for this transaction; False if a copy committed meanwhile.

        Two copies of one service may overlap (a copy still running from an earlier attempt of capture):
        the later one waits here for the earlier to end, then finds its checkpoint and copies nothing.
        """
        try:
            self.target.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(f"splitter.copy.{self._service}"),))
            return read_checkpoint(self.target, self._service) is None
        except psycopg.Error as exc:
            raise wrap_db_error(exc, self._what, *self._dsns) from exc

    def copy(self, route: Route, on_rows: Callable[[int], None] | None = None) -> int:
        """Pipe the route; DataRejectedError if the target refused a row (the route's rows are rolled back).
        `on_rows`: as `copy_route`'s."""
        try:
            with self.source.transaction(), self.target.transaction():
                return copy_route(self.source, self.target, route, on_rows)
        except psycopg.Error as exc:
            if is_data_rejection(exc.sqlstate):
                raise DataRejectedError(mask_secrets(f"{self._what}: {route.describe()}: {refusal_message(exc)}",
                                                     *self._dsns), exc.sqlstate) from exc
            raise wrap_db_error(exc, self._what, *self._dsns) from exc

    def copy_rows(self, route: Route, *, stop_at_first: bool) -> RowCopy:
        """The route again in batches and row by row, keeping out only the rows the target refuses."""
        try:
            return copy_route_rows(self.source, self.target, route, stop_at_first=stop_at_first, dsns=self._dsns)
        except psycopg.Error as exc:
            raise wrap_db_error(exc, self._what, *self._dsns) from exc

    def store_dead_letters(self, letters: Sequence[dead_letters.DeadLetter]) -> None:
        """Store the rows set aside in the copy's transaction: they commit with its rows and checkpoint."""
        try:
            dead_letters.insert(self.target, self._service, letters)
        except psycopg.Error as exc:
            raise wrap_db_error(exc, self._what, *self._dsns) from exc

    def write_checkpoint(self, service: str, checkpoint: Checkpoint, routes: Sequence[Route]) -> None:
        """The copy's checkpoint, with the routes' source tables' shapes at its snapshot: the baseline the
        worker's schema policy starts from (a type change before a table's first streamed row stops it)."""
        try:
            write_checkpoint(self.target, service, checkpoint)
            shapes = {}
            for route in routes:
                relation = relation_schema(self.source, route.source_schema, route.source_table)
                shapes[relation.qualified] = (checkpoint.offset, relation.header_bytes())
            source_shapes.store(self.target, service, shapes)
        except psycopg.Error as exc:
            raise wrap_db_error(exc, self._what, *self._dsns) from exc

    def commit(self) -> None:
        try:
            self.target.commit()
        except psycopg.Error as exc:
            raise wrap_db_error(exc, self._what, *self._dsns) from exc

    def rollback(self) -> None:
        with contextlib.suppress(psycopg.Error):
            self.target.rollback()

    def close(self) -> None:
        self.source.close()
        self.target.close()


class ChunkReader:
    """A source table read in primary-key order, `chunk_rows` rows at a time, every column as text."""

    def __init__(self, relation: RelationSchema, chunk_rows: int) -> None:
        key_cols = relation.key_columns
        self._chunk_rows = chunk_rows
        self._names = [c.name for c in relation.columns]
        self._key_types = {c.name: sqlrender.checked_type(c.sql_type) for c in relation.columns if c.name in key_cols}
        self._key_cols = key_cols
        self._select_cols = sql.SQL(", ").join(
            sql.SQL("{}::text AS {}").format(sql.Identifier(c.name), sql.Identifier(c.name)) for c in relation.columns)
        # Qualified: a bare name in ORDER BY means the output column, the key's text, whose order is not the
        # key's ("10" < "9"); the next chunk's WHERE compares typed keys, so a text order skipped rows.
        self._order = sql.SQL(", ").join(sql.Identifier("src", k) for k in key_cols)
        self._key_tuple = sql.SQL("({})").format(self._order)
        self._relation = sqlrender.qualified(relation.schema, relation.table)

    def after(self, conn: psycopg.Connection, last_key: Sequence[Any] | None) -> list[dict[str, Any]]:
        """The next chunk: the first rows with a key above `last_key` (from the first key if None)."""
        where: sql.Composable = sql.SQL("")
        if last_key is not None:
            typed = sql.SQL(", ").join(sql.SQL("{}::{}").format(sql.Literal(v), self._key_types[k])
                                       for k, v in zip(self._key_cols, last_key, strict=True))
            where = sql.SQL("WHERE {} > ({})").format(self._key_tuple, typed)
        return self._read(conn, where)

    def keys(self, conn: psycopg.Connection, keys: list[list[str | None]]) -> list[dict[str, Any]]:
        """The rows of `keys` (each key's column values as text, in key-column order) that still exist."""
        where = sql.SQL("WHERE {} IN (SELECT {} FROM jsonb_array_elements({}::jsonb) AS e)").format(
            self._key_tuple, sql.SQL(", ").join(sql.SQL("(e->>{})::{}").format(sql.Literal(i), self._key_types[k])
                                                for i, k in enumerate(self._key_cols)),
            sql.Literal(orjson.dumps(keys).decode()))
        return self._read(conn, where)

    def _read(self, conn: psycopg.Connection, where: sql.Composable) -> list[dict[str, Any]]:
        # Values inlined, no parameters: the text carries source names, which may hold a `%` (sqlrender).
        rows = conn.execute(sql.SQL("SELECT {} FROM {} AS src {} ORDER BY {} LIMIT {}").format(
            self._select_cols, self._relation, where, self._order, sql.Literal(self._chunk_rows))).fetchall()
        return [dict(zip(self._names, r, strict=True)) for r in rows]

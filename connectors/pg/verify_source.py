"""The source side of `splitter verify`: its read session, its consistent point, and what both sides share.

Owns: the verify session settings both sides of a comparison must agree on, opening a session with
them, the source session (one REPEATABLE READ, READ ONLY transaction, optionally importing the
snapshot a temporary slot exported), the consistent point (a temporary slot's LSN and its snapshot,
the slot dropped as soon as the snapshot is imported), the source's WAL position for the pre-hold,
and streaming rows through a server-side cursor.  Nothing is ever written to the source.
Must not: decide what a difference means, hold workers (`splitter.ops.verify.snapshot` does, through
`connectors.pg.state.control`), or touch a service database (`verify_target` does).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
from psycopg import sql

from connectors.pg.client import connect, wrap_db_error
from connectors.pg.positions import current_wal_lsn
from connectors.pg.source import ReplicationConnection, estimated_rows, relation_schema
from connectors.pg.verify_sql import TablePlan, VerifyColumn, source_rows
from splitter.core.dsn import SOURCE_DATABASE, mask_secrets
from splitter.core.errors import ConfigurationError, FatalError
from splitter.topology import sqlrender
from splitter.topology.model import Route

# Text forms are pinned by `connect` (TEXT_FORM_SETTINGS), the same in every session splitter opens.
_SESSION_SETTINGS: tuple[tuple[str, str], ...] = (
    # A verify of a large table runs long statements and keeps its snapshot open on purpose.
    ("statement_timeout", "0"),
    ("idle_in_transaction_session_timeout", "0"),
)

_FETCH_ROWS = 5000  # rows per round trip when streaming the rows of differing chunks


def open_session(dsn: str, what: str) -> psycopg.Connection:
    """A connection with verify's session settings (autocommit until `begin_repeatable_read`)."""
    conn = connect(dsn, what, autocommit=True, application_name="splitter-verify")
    try:
        for name, value in _SESSION_SETTINGS:
            conn.execute("SELECT set_config(%s, %s, false)", (name, value))
    except psycopg.Error as exc:
        conn.close()
        raise wrap_db_error(exc, f"cannot prepare the verify session on {what}", dsn) from exc
    return conn


def begin_repeatable_read(conn: psycopg.Connection, *, read_only: bool) -> None:
    # psycopg opens the transaction with these on the next statement, so that statement is the
    # transaction's first: where SET TRANSACTION SNAPSHOT must be.
    conn.autocommit = False
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = read_only


class SourceSession:
    """The source, read in one REPEATABLE READ transaction (at the exported snapshot if given)."""

    def __init__(self, dsn: str, snapshot: str | None) -> None:
        self.dsn = dsn
        self.conn = open_session(dsn, SOURCE_DATABASE)
        try:
            begin_repeatable_read(self.conn, read_only=True)
            if snapshot is not None:
                self.conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
            else:
                self.conn.execute("SELECT 1")  # take the transaction's snapshot now
        except psycopg.Error as exc:
            self.conn.close()
            raise wrap_db_error(exc, "cannot open the verify snapshot in the source", dsn) from exc

    def plan(self, route: Route, target: Sequence[VerifyColumn], chunk_rows: int) -> TablePlan:
        try:
            relation = relation_schema(self.conn, route.source_schema, route.source_table)
        except psycopg.Error as exc:
            raise wrap_db_error(exc, f"cannot read the columns of {route.source_schema}.{route.source_table}",
                                self.dsn) from exc
        problems = sqlrender.check_route_against(route, {c.name: c for c in relation.columns})
        if problems:
            raise ConfigurationError("; ".join(problems))
        source_relation = sqlrender.source_table_relation(route.source_schema, route.source_table,
                                                          relation.columns)
        return TablePlan(route, tuple(target), source_relation, chunk_rows)

    def estimate_rows(self, route: Route) -> int:
        return estimated_rows(self.conn, route.source_schema, route.source_table)

    def rows(self, plan: TablePlan, chunks: Sequence[int]) -> Iterator[tuple[Any, ...]]:
        """The source rows of `chunks` as (chunk, *column texts), streamed."""
        return stream_rows(self.conn, source_rows(plan, chunks), None,
                           f"reading {plan.route.describe()} in the source", self.dsn)

    def close(self) -> None:
        self.conn.close()


def wal_position(dsn: str) -> int:
    """The source's current WAL position, read on a connection of its own."""
    with connect(dsn, SOURCE_DATABASE, autocommit=True, application_name="splitter-verify") as conn:
        return current_wal_lsn(conn)


def snapshot_session(dsn: str) -> tuple[int, SourceSession]:
    """A consistent point P and a source session reading exactly the transactions committed before it.

    P and the snapshot come from a TEMPORARY logical slot.  Once imported, the transaction keeps that
    snapshot by itself, so the replication connection (and its slot, which would otherwise retain WAL
    for as long as a large verify runs) is closed right after the import.
    """
    slot = f"splitter_verify_{uuid.uuid4().hex[:16]}"
    replication = ReplicationConnection(dsn)
    try:
        point, snapshot = replication.create_slot(slot, temporary=True)
        return point, SourceSession(dsn, snapshot)
    finally:
        # The snapshot is imported (or failed to be): neither the slot nor the connection is needed now.
        replication.close()


def stream_rows(conn: psycopg.Connection, query: sql.Composed, params: tuple[object, ...] | None, what: str,
                dsn: str) -> Iterator[tuple[Any, ...]]:
    # A server-side cursor: rows arrive in batches, never the whole result at once.
    try:
        with conn.cursor(name="splitter_verify_rows") as cur:
            cur.execute(query, params)
            while True:
                batch = cur.fetchmany(_FETCH_ROWS)
                if not batch:
                    break
                yield from batch
    except psycopg.Error as exc:
        raise classified_error(exc, what, dsn) from exc


def classified_error(exc: psycopg.Error, what: str, *dsns: str) -> Exception:
    # A cast of a source value to the target's type can fail (a value the target cannot hold): the
    # data is wrong, not the setup, and retrying will not help.
    if getattr(exc, "sqlstate", None) in ("22001", "22003", "22P02", "22007", "22008"):
        return FatalError(mask_secrets(f"{what}: {exc}", *dsns))
    return wrap_db_error(exc, what, *dsns)

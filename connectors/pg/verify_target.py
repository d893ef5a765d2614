"""The service-database side of `splitter verify`: its read session, the chunk comparison, the progress row.

Owns: one session per service database in a REPEATABLE READ transaction whose first read is the
control row and checkpoint (`connectors.pg.state.control.hold_state`), the per-table temporary tables
the source's chunk hashes are piped into and compared in, streaming the target rows of differing
chunks, and `ProgressRecorder`, which writes `splitter.verify_progress` on a connection of its own (so
it is seen while verify runs).  Writes: only temporary tables and that progress row.
Must not: decide what a difference means or format reports (`splitter.ops.verify` does), or write to
the source.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from connectors.pg.catalog import declared_columns
from connectors.pg.client import connect, wrap_db_error
from connectors.pg.state import verify_progress
from connectors.pg.state.control import HoldState, hold_state
from connectors.pg.state.schema import ensure_state_schema
from connectors.pg.verify_source import (
    SourceSession,
    begin_repeatable_read,
    classified_error,
    open_session,
    stream_rows,
)
from connectors.pg.verify_sql import (
    BAD_CHUNKS,
    SRC_CHUNKS,
    TGT_CHUNKS,
    TablePlan,
    VerifyColumn,
    create_source_chunks,
    differing_chunks,
    source_chunks_copy,
    target_chunks,
    target_rows,
)
from splitter.core.errors import SplitterError
from splitter.topology.model import Route

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChunkSummary:
    source_rows: int
    target_rows: int
    chunks: int
    differing: list[int]


class TargetSession:
    """One service database, read in one REPEATABLE READ transaction; per-table temporary tables."""

    def __init__(self, dsn: str, service: str) -> None:
        self._dsn = dsn
        self.service = service
        self.conn = open_session(dsn, f"the database of service {service}")
        # Not READ ONLY: the chunk tables are temporary tables, which CREATE needs a writable transaction for.
        begin_repeatable_read(self.conn, read_only=False)

    def begin(self) -> HoldState:
        """Take the transaction's snapshot; returns the control row and checkpoint as that snapshot sees them."""
        try:
            return hold_state(self.conn, self.service)
        except psycopg.Error as exc:
            raise wrap_db_error(exc, f"cannot open the verify snapshot in service {self.service}", self._dsn) from exc

    def columns(self, route: Route) -> list[VerifyColumn]:
        return [VerifyColumn(c.name, None if c.user_defined else c.type_name, c.default)
                for c in declared_columns(self.conn, route)]

    def compare_chunks(self, plan: TablePlan, source: SourceSession,
                       on_chunk_lines: Callable[[int], None] | None = None) -> ChunkSummary:
        """Hash both sides by chunk; the source's hashes travel into this database, the comparison runs here."""
        what = f"hashing {plan.route.describe()}"
        try:
            self._drop_temporaries()
            self.conn.execute(create_source_chunks(plan))
            with source.conn.cursor().copy(source_chunks_copy(plan)) as out, \
                    self.conn.cursor().copy(sql.SQL("COPY pg_temp.{} FROM STDIN").format(
                        sql.Identifier(SRC_CHUNKS))) as into:
                for data in out:
                    into.write(data)
                    if on_chunk_lines is not None:
                        on_chunk_lines(bytes(data).count(b"\n"))
            self.conn.execute(target_chunks(plan))
            self.conn.execute(differing_chunks())
            row = self.conn.execute(sql.SQL(
                "SELECT (SELECT coalesce(sum(cnt), 0) FROM pg_temp.{}), (SELECT coalesce(sum(cnt), 0) FROM pg_temp.{}),"
                " (SELECT count(*) FROM pg_temp.{})").format(
                sql.Identifier(SRC_CHUNKS), sql.Identifier(TGT_CHUNKS), sql.Identifier(SRC_CHUNKS))).fetchone()
            differing = [r[0] for r in self.conn.execute(
                sql.SQL("SELECT chunk FROM pg_temp.{} ORDER BY chunk").format(sql.Identifier(BAD_CHUNKS)))]
        except psycopg.Error as exc:
            raise classified_error(exc, what, self._dsn, source.dsn) from exc
        assert row is not None
        return ChunkSummary(int(row[0]), int(row[1]), int(row[2]), differing)

    def _drop_temporaries(self) -> None:
        for name in (SRC_CHUNKS, TGT_CHUNKS, BAD_CHUNKS):
            self.conn.execute(sql.SQL("DROP TABLE IF EXISTS pg_temp.{}").format(sql.Identifier(name)))

    def rows(self, plan: TablePlan, chunks: Sequence[int]) -> Iterator[tuple[Any, ...]]:
        """The target rows of `chunks` as (chunk, *column texts), streamed."""
        return stream_rows(self.conn, target_rows(plan, chunks), None,
                           f"reading {plan.route.describe()} in the target", self._dsn)

    def finish_table(self) -> None:
        try:
            self._drop_temporaries()
        except psycopg.Error as exc:
            raise wrap_db_error(exc, "cannot drop verify's temporary tables", self._dsn) from exc

    def close(self) -> None:
        self.conn.close()


class ProgressRecorder:
    """Records how far verify is in each service database (exported by the service's worker).

    Progress is for dashboards: a database that refuses it (a role without write access to the
    splitter schema) costs a warning, never the verify.
    """

    def __init__(self, dsns: dict[str, str], tables: dict[str, int]) -> None:
        self._conns: dict[str, psycopg.Connection] = {}
        self._left = dict(tables)
        for service, dsn in dsns.items():
            self._guard(service, functools.partial(self._start, service, dsn, tables[service]))

    def _start(self, service: str, dsn: str, tables: int) -> None:
        conn = connect(dsn, f"the database of service {service}", autocommit=True,
                       application_name="splitter-verify-progress")
        self._conns[service] = conn
        ensure_state_schema(conn)
        verify_progress.started(conn, service, tables)

    def table_done(self, service: str, mismatched: bool) -> None:
        conn = self._conns.get(service)
        if conn is None:
            return
        self._left[service] -= 1
        self._guard(service, lambda: verify_progress.table_done(conn, service, mismatched, self._left[service] == 0))

    def _guard(self, service: str, write: Callable[[], None]) -> None:
        try:
            write()
        except (psycopg.Error, SplitterError) as exc:
            message = exc if isinstance(exc, SplitterError) else wrap_db_error(exc, "cannot record verify progress")
            log.warning("verify: progress of service %s is not recorded: %s", service, str(message).splitlines()[0])
            conn = self._conns.pop(service, None)
            if conn is not None:
                conn.close()

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()

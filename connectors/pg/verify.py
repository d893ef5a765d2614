"""PostgreSQL side of `splitter verify`: the SQL that hashes, the sessions that read, the hold handshake.

Owns:
  * the chunk-hash and row-fetch statements for one route, rendered from the topology through
    `splitter.sqlrender.projection` (so verify runs the very expressions the backfill and the
    worker run) on the source side, and over the plain target columns on the service side;
  * the read sessions: a source session in a REPEATABLE READ, READ ONLY transaction (optionally
    importing the snapshot a temporary slot exported) and one service-database session per
    service in a REPEATABLE READ transaction;
  * the control-table handshake with a service's worker (`splitter.control`): request a hold at a
    source LSN, read back whether the worker holds, release.

How a table is compared, and why this shape:
  * Row identity and order come from the *text form of the target key*, compared in collation
    "C" on both sides.  Both sides can compute it (the source from the key expressions, the
    target from its key columns), byte order is the same in both databases whatever their
    default collations or key types are (an int key in the source may be a bigint or text in the
    target), and Python's `str` order equals it for UTF-8 text, which the row merge relies on
    (and checks as it goes).
  * The source picks the chunk boundaries: its rows in key order are cut every `chunk_rows` rows
    (one sort, in one statement), and each chunk's count, hash and first key go out through
    `COPY ... TO STDOUT` straight into a temporary table in the service database.  The target
    then assigns its own rows to the same key ranges (one sort with the boundaries merged in as
    markers) and the comparison of chunk hashes happens there too.  Python only pipes bytes and
    receives the numbers of the chunks that differ, so memory stays flat with table size and no
    index on the text form of the key is needed (a range query per chunk without one would scan
    the table once per chunk).
  * Only differing chunks' rows leave the databases, both sides ordered by (chunk, key), to be
    merged by `splitter.verify`.
  * Every value is compared as text, with the same session settings (TimeZone, DateStyle,
    IntervalStyle, extra_float_digits, bytea_output) on both sides.  A source value is first cast
    to the target column's built-in type (with its typmod), because that assignment is what the
    worker's INSERT does: `timestamp(3)` written to a `timestamp(0)` column reads back rounded.
    Target columns of user-defined types (enums the source does not have) compare as text.
  * A row's text is `ROW(col::text, ...)::text`, whose quoting keeps NULL and '' and embedded
    commas apart; a chunk's hash is md5 over the md5 of each row in key order, so the server's
    per-chunk aggregate stays 32 bytes a row however wide the rows are (TOASTed posts).

Writes: only temporary tables in the service databases, `splitter.control` rows, and the progress
row of `connectors.verify_progress` (on a connection of its own, so it is seen while verify runs).  Nothing is
ever written to the source.  Must not: decide what a difference means or format reports
(`splitter.verify` does), or hold a service's worker beyond the `release()` the caller runs in
`finally`.
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
from connectors.pg.source import relation_schema
from connectors.pg.state import verify_progress
from connectors.pg.state.control import HoldState, hold_state
from connectors.pg.state.schema import ensure_state_schema
from splitter.core.dsn import mask_secrets
from splitter.core.errors import ConfigurationError, FatalError, SplitterError
from splitter.topology import sqlrender
from splitter.topology.model import Route
from splitter.topology.sqlrender import TargetColumn

log = logging.getLogger(__name__)


# Text forms depend on these; both sides of a comparison must agree on them, whatever the
# servers' or roles' defaults are.
_SESSION_SETTINGS: tuple[tuple[str, str], ...] = (
    ("TimeZone", "UTC"),
    ("DateStyle", "ISO, MDY"),
    ("IntervalStyle", "postgres"),
    ("extra_float_digits", "1"),
    ("bytea_output", "hex"),
    # A verify of a large table runs long statements and keeps its snapshot open on purpose.
    ("statement_timeout", "0"),
    ("idle_in_transaction_session_timeout", "0"),
)

# Names of the per-table temporary tables in the service database.
_SRC_CHUNKS = "splitter_verify_source_chunks"
_TGT_CHUNKS = "splitter_verify_target_chunks"
_BAD_CHUNKS = "splitter_verify_differing_chunks"

C = sql.SQL(' COLLATE "C"')
_FETCH_ROWS = 5000  # rows per round trip when streaming the rows of differing chunks


# --- the statements --------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyColumn:
    """A target column as verify compares it."""

    name: str
    # The built-in target type (with typmod) a source value is cast to before ::text; None for
    # user-defined target types, which do not exist in the source: compared as text.
    cast: str | None


@dataclass(frozen=True)
class TablePlan:
    """What verify needs to render one route's statements."""

    route: Route
    columns: tuple[VerifyColumn, ...]  # topology order
    source_relation: sql.Composed  # sqlrender.source_table_relation(...)
    chunk_rows: int

    @property
    def key_index(self) -> tuple[int, ...]:
        names = [c.name for c in self.columns]
        return tuple(names.index(k) for k in self.route.table.key)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


def _v(i: int) -> sql.Identifier:
    return sql.Identifier(f"v{i}")


def _k(i: int) -> sql.Identifier:
    return sql.Identifier(f"k{i}")


def _keyed(plan: TablePlan, side: str) -> sql.Composed:
    """Rows as (k0.. key texts in "C", v0.. every column's text, r = the row's text)."""
    if side == "source":
        projected = sqlrender.projection(plan.route, [TargetColumn(c.name) for c in plan.columns],
                                         plan.source_relation)
        texts = [
            sql.SQL("(p.{}::{})::text AS {}").format(sql.Identifier(c.name), sqlrender.checked_type(c.cast), _v(i))
            if c.cast else sql.SQL("p.{}::text AS {}").format(sql.Identifier(c.name), _v(i))
            for i, c in enumerate(plan.columns)
        ]
    else:
        projected = sql.SQL("SELECT {} FROM {}").format(
            sql.SQL(", ").join(sql.Identifier(c.name) for c in plan.columns),
            sql.Identifier(plan.route.target_schema, plan.route.target_table))
        texts = [sql.SQL("p.{}::text AS {}").format(sql.Identifier(c.name), _v(i)) for i, c in enumerate(plan.columns)]
    values = sql.SQL(", ").join(_v(i) for i in range(len(plan.columns)))
    keys = [sql.SQL("t.{}{} AS {}").format(_v(ki), C, _k(n)) for n, ki in enumerate(plan.key_index)]
    return sql.SQL("SELECT {}, t.*, (ROW({}))::text{} AS r FROM (SELECT {} FROM ({}) AS p) AS t").format(
        sql.SQL(", ").join(keys), values, C, sql.SQL(", ").join(texts), projected)


def _key_order(plan: TablePlan, prefix: str = "") -> sql.Composed:
    return sql.SQL(", ").join(sql.SQL(prefix + "{}").format(_k(n)) for n in range(len(plan.key_index)))


def source_chunks_copy(plan: TablePlan) -> sql.Composed:
    """COPY out of the source: one line per chunk of `chunk_rows` rows in key order.

    Columns: chunk number, row count, hash, then the chunk's first key (its lower boundary).
    `r` breaks ties should two source rows project to one target key (the target then holds one
    of them and the chunk reports it), so the order, and hence the chunks, are deterministic.
    """
    n = sql.Literal(plan.chunk_rows)
    nkeys = len(plan.key_index)
    first = sql.SQL(", ").join(
        sql.SQL("max({}) FILTER (WHERE (rn - 1) % {} = 0)").format(_k(i), n) for i in range(nkeys))
    return sql.SQL(
        "COPY (SELECT (rn - 1) / {n} AS chunk, count(*), md5(string_agg(md5(r), '' ORDER BY rn)), {first} "
        "FROM (SELECT {keys}, r, row_number() OVER (ORDER BY {keys}, r) AS rn FROM ({keyed}) AS s) AS a "
        "GROUP BY 1 ORDER BY 1) TO STDOUT"
    ).format(n=n, first=first, keys=_key_order(plan), keyed=_keyed(plan, "source"))


def create_source_chunks(plan: TablePlan) -> sql.Composed:
    keys = sql.SQL(", ").join(sql.SQL("{} text{}").format(_k(i), C) for i in range(len(plan.key_index)))
    return sql.SQL(
        "CREATE TEMPORARY TABLE {} (chunk bigint PRIMARY KEY, cnt bigint NOT NULL, hash text NOT NULL, {})"
    ).format(sql.Identifier(_SRC_CHUNKS), keys)


def _assigned(plan: TablePlan, with_values: bool) -> sql.Composed:
    """Target rows with the chunk their key falls in: the source's boundaries merged in as markers.

    A marker sorts before a row with the same key (`b NULLS LAST`), so a row equal to a boundary
    lands in the chunk it starts; rows before the first boundary are chunk -1 (only extras).
    """
    nkeys = len(plan.key_index)
    nvals = len(plan.columns)
    keys = _key_order(plan)
    null_vals = [sql.SQL("NULL::text")] * nvals if with_values else []
    marker_cols = sql.SQL(", ").join([*(_k(i) for i in range(nkeys)), sql.SQL("chunk"),
                                      sql.SQL("NULL::text"), *null_vals])
    row_vals = [_v(i) for i in range(nvals)] if with_values else []
    row_cols = sql.SQL(", ").join([*(_k(i) for i in range(nkeys)), sql.SQL("NULL::bigint"), sql.SQL("r"), *row_vals])
    names = sql.SQL(", ").join([*(_k(i) for i in range(nkeys)), sql.SQL("b"), sql.SQL("r"), *row_vals])
    return sql.SQL(
        "SELECT coalesce(max(b) OVER (ORDER BY {keys}, b NULLS LAST, r ROWS UNBOUNDED PRECEDING), -1) AS chunk, "
        "{names} FROM (SELECT {marker_cols} FROM pg_temp.{src} UNION ALL SELECT {row_cols} FROM ({keyed}) AS t) "
        "AS u ({names})"
    ).format(keys=keys, names=names, marker_cols=marker_cols, src=sql.Identifier(_SRC_CHUNKS),
             row_cols=row_cols, keyed=_keyed(plan, "target"))


def target_chunks(plan: TablePlan) -> sql.Composed:
    return sql.SQL(
        "CREATE TEMPORARY TABLE {} AS SELECT chunk, count(*) AS cnt, "
        "md5(string_agg(md5(r), '' ORDER BY {keys}, r)) AS hash FROM ({assigned}) AS x "
        "WHERE b IS NULL GROUP BY chunk"
    ).format(sql.Identifier(_TGT_CHUNKS), keys=_key_order(plan), assigned=_assigned(plan, with_values=False))


def differing_chunks() -> sql.Composed:
    return sql.SQL(
        "CREATE TEMPORARY TABLE {bad} AS SELECT coalesce(s.chunk, t.chunk) AS chunk "
        "FROM pg_temp.{src} AS s FULL JOIN pg_temp.{tgt} AS t ON t.chunk = s.chunk "
        "WHERE s.hash IS DISTINCT FROM t.hash OR s.cnt IS DISTINCT FROM t.cnt"
    ).format(bad=sql.Identifier(_BAD_CHUNKS), src=sql.Identifier(_SRC_CHUNKS), tgt=sql.Identifier(_TGT_CHUNKS))


def target_rows(plan: TablePlan) -> sql.Composed:
    """The rows of the differing chunks in the target (chunk numbers as parameter 1, bigint[])."""
    vals = sql.SQL(", ").join(sql.SQL("x.{}").format(_v(i)) for i in range(len(plan.columns)))
    # Ordered as the window already sorted them (chunk only grows along it), so no second sort.
    return sql.SQL(
        "SELECT x.chunk, {vals} FROM ({assigned}) AS x "
        "WHERE x.b IS NULL AND x.chunk = ANY(%s::bigint[]) ORDER BY {keys}, x.b, x.r"
    ).format(vals=vals, assigned=_assigned(plan, with_values=True), keys=_key_order(plan, "x."))


def source_rows(plan: TablePlan) -> sql.Composed:
    """The rows of the differing chunks in the source (chunk numbers as parameter 1, bigint[])."""
    vals = sql.SQL(", ").join(sql.SQL("a.{}").format(_v(i)) for i in range(len(plan.columns)))
    # `= ANY` of a bound array is hashed by PostgreSQL (14+); ordered as the window sorted them.
    return sql.SQL(
        "SELECT a.chunk, {vals} FROM (SELECT s.*, (row_number() OVER (ORDER BY {keys}, r) - 1) / {n} AS chunk "
        "FROM ({keyed}) AS s) AS a WHERE a.chunk = ANY(%s::bigint[]) ORDER BY {akeys}, a.r"
    ).format(vals=vals, keys=_key_order(plan), n=sql.Literal(plan.chunk_rows), keyed=_keyed(plan, "source"),
             akeys=_key_order(plan, "a."))


# --- sessions --------------------------------------------------------------------------------------


def _open(dsn: str, what: str) -> psycopg.Connection:
    conn = connect(dsn, what, autocommit=True, application_name="splitter-verify")
    try:
        for name, value in _SESSION_SETTINGS:
            conn.execute("SELECT set_config(%s, %s, false)", (name, value))
    except psycopg.Error as exc:
        conn.close()
        raise wrap_db_error(exc, f"cannot prepare the verify session on {what}", dsn) from exc
    return conn


def _begin_repeatable_read(conn: psycopg.Connection, *, read_only: bool) -> None:
    # psycopg opens the transaction with these on the next statement, so that statement is the
    # transaction's first: where SET TRANSACTION SNAPSHOT must be.
    conn.autocommit = False
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = read_only


@dataclass(frozen=True)
class ChunkSummary:
    source_rows: int
    target_rows: int
    chunks: int
    differing: list[int]


class SourceSession:
    """The source, read in one REPEATABLE READ transaction (at the exported snapshot if given)."""

    def __init__(self, dsn: str, snapshot: str | None) -> None:
        self._dsn = dsn
        self.conn = _open(dsn, "the source database")
        try:
            _begin_repeatable_read(self.conn, read_only=True)
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
                                self._dsn) from exc
        problems = sqlrender.check_route_against(route, {c.name: c for c in relation.columns})
        if problems:
            raise ConfigurationError("; ".join(problems))
        source_relation = sqlrender.source_table_relation(route.source_schema, route.source_table,
                                                          relation.columns)
        return TablePlan(route, tuple(target), source_relation, chunk_rows)

    def estimate_rows(self, route: Route) -> int:
        row = self.conn.execute(
            "SELECT greatest(c.reltuples, 0)::bigint FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s", (route.source_schema, route.source_table)).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self.conn.close()


class TargetSession:
    """One service database, read in one REPEATABLE READ transaction; per-table temporary tables."""

    def __init__(self, dsn: str, service: str) -> None:
        self._dsn = dsn
        self.service = service
        self.conn = _open(dsn, f"the database of service {service}")
        # Not READ ONLY: the chunk tables are temporary tables, which CREATE needs a writable transaction for.
        _begin_repeatable_read(self.conn, read_only=False)

    def begin(self) -> HoldState:
        """Take the transaction's snapshot; returns the control row and checkpoint as that snapshot sees them."""
        try:
            return hold_state(self.conn, self.service)
        except psycopg.Error as exc:
            raise wrap_db_error(exc, f"cannot open the verify snapshot in service {self.service}", self._dsn) from exc

    def columns(self, route: Route) -> list[VerifyColumn]:
        return [VerifyColumn(c.name, None if c.user_defined else c.type_name)
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
                        sql.Identifier(_SRC_CHUNKS))) as into:
                for data in out:
                    into.write(data)
                    if on_chunk_lines is not None:
                        on_chunk_lines(bytes(data).count(b"\n"))
            self.conn.execute(target_chunks(plan))
            self.conn.execute(differing_chunks())
            row = self.conn.execute(sql.SQL(
                "SELECT (SELECT coalesce(sum(cnt), 0) FROM pg_temp.{}), (SELECT coalesce(sum(cnt), 0) FROM pg_temp.{}),"
                " (SELECT count(*) FROM pg_temp.{})").format(
                sql.Identifier(_SRC_CHUNKS), sql.Identifier(_TGT_CHUNKS), sql.Identifier(_SRC_CHUNKS))).fetchone()
            differing = [r[0] for r in self.conn.execute(
                sql.SQL("SELECT chunk FROM pg_temp.{} ORDER BY chunk").format(sql.Identifier(_BAD_CHUNKS)))]
        except psycopg.Error as exc:
            raise _classified(exc, what, self._dsn, source._dsn) from exc
        assert row is not None
        return ChunkSummary(int(row[0]), int(row[1]), int(row[2]), differing)

    def _drop_temporaries(self) -> None:
        for name in (_SRC_CHUNKS, _TGT_CHUNKS, _BAD_CHUNKS):
            self.conn.execute(sql.SQL("DROP TABLE IF EXISTS pg_temp.{}").format(sql.Identifier(name)))

    def rows(self, plan: TablePlan, chunks: Sequence[int]) -> Iterator[tuple[Any, ...]]:
        """The target rows of `chunks` as (chunk, *column texts), streamed."""
        return _stream(self.conn, target_rows(plan), (list(chunks),), f"reading {plan.route.describe()} in the target",
                       self._dsn)

    def finish_table(self) -> None:
        try:
            self._drop_temporaries()
        except psycopg.Error as exc:
            raise wrap_db_error(exc, "cannot drop verify's temporary tables", self._dsn) from exc

    def close(self) -> None:
        self.conn.close()


def source_rows_of(source: SourceSession, plan: TablePlan,
                   chunks: Sequence[int]) -> Iterator[tuple[Any, ...]]:
    """The source rows of `chunks` as (chunk, *column texts), streamed."""
    return _stream(source.conn, source_rows(plan), (list(chunks),),
                   f"reading {plan.route.describe()} in the source", source._dsn)


def _stream(conn: psycopg.Connection, query: sql.Composed, params: tuple[object, ...] | None, what: str,
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
        raise _classified(exc, what, dsn) from exc


def _classified(exc: psycopg.Error, what: str, *dsns: str) -> Exception:
    # A cast of a source value to the target's type can fail (a value the target cannot hold): the
    # data is wrong, not the setup, and retrying will not help.
    if getattr(exc, "sqlstate", None) in ("22001", "22003", "22P02", "22007", "22008"):
        return FatalError(mask_secrets(f"{what}: {exc}", *dsns))
    return wrap_db_error(exc, what, *dsns)


__all__ = [
    "ChunkSummary",
    "SourceSession",
    "TablePlan",
    "TargetSession",
    "VerifyColumn",
    "source_rows_of",
]


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

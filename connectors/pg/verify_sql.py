"""The SQL of `splitter verify`: the chunk-hash and row-fetch statements for one route.

Owns: `TablePlan` (what a route's statements are rendered from) and the statements themselves,
rendered from the topology through `splitter.topology.sqlrender.projection` (so verify runs the very
expressions the backfill and the worker run) on the source side, and over the plain target columns on
the service side.  Must not: run anything (the sessions in `verify_source` and `verify_target` do).

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
    merged by `splitter.ops.verify.merge`.
  * Every value is compared as text, with the same session settings (TimeZone, DateStyle,
    IntervalStyle, extra_float_digits, bytea_output) on both sides.  A source value is first cast
    to the target column's built-in type (with its typmod), because that assignment is what the
    worker's INSERT does: `timestamp(3)` written to a `timestamp(0)` column reads back rounded.
    Target columns of user-defined types (enums the source does not have) compare as text.
  * A value's text is what its output function prints (`_output_text`), a row's text is
    `ROW(value text, ...)::text`, whose quoting keeps NULL and '' and embedded
    commas apart; a chunk's hash is md5 over the md5 of each row in key order, so the server's
    per-chunk aggregate stays 32 bytes a row however wide the rows are (TOASTed posts).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from psycopg import sql

from splitter.topology import sqlrender
from splitter.topology.model import Route
from splitter.topology.sqlrender import TargetColumn

# Names of the per-table temporary tables in the service database.
SRC_CHUNKS = "splitter_verify_source_chunks"
TGT_CHUNKS = "splitter_verify_target_chunks"
BAD_CHUNKS = "splitter_verify_differing_chunks"

C = sql.SQL(' COLLATE "C"')


@dataclass(frozen=True)
class VerifyColumn:
    """A target column as verify compares it."""

    name: str
    # The built-in target type (with typmod) a source value is cast to before ::text; None for
    # user-defined target types, which do not exist in the source: compared as text.
    cast: str | None
    default: str | None = None  # what DEFAULT in its expression stands for (`TargetColumn.default`)


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


def _output_text(value: sql.Composable) -> sql.Composed:
    """`value` as its type's output function prints it, which is the text the worker and the copy carry.

    Not `::text`: that cast skips the output function where it is binary or a function of its own, and so
    hides what differs (char(n)::text drops the padding, inet::text adds a /32 the value never showed) or
    shows what nobody receives (xml::text keeps a declaration the output function leaves out).  concat()
    prints with the output function (and, unlike format(), has no % for the driver to take for a
    placeholder); num_nulls tells a NULL from a composite whose fields are all NULL (`IS NULL` would not).
    """
    return sql.SQL("CASE WHEN num_nulls({v}) = 0 THEN concat({v}) END").format(v=value)


def _keyed(plan: TablePlan, side: str) -> sql.Composed:
    """Rows as (k0.. key texts in "C", v0.. every column's text, r = the row's text)."""
    if side == "source":
        projected = sqlrender.projection(plan.route, [TargetColumn(c.name, default=c.default) for c in plan.columns],
                                         plan.source_relation)
        values: list[sql.Composable] = [
            sql.SQL("(p.{}::{})").format(sql.Identifier(c.name), sqlrender.checked_type(c.cast)) if c.cast
            else sql.SQL("p.{}").format(sql.Identifier(c.name)) for c in plan.columns]
    else:
        projected = sql.SQL("SELECT {} FROM {}").format(
            sql.SQL(", ").join(sql.Identifier(c.name) for c in plan.columns),
            sql.Identifier(plan.route.target_schema, plan.route.target_table))
        values = [sql.SQL("p.{}").format(sql.Identifier(c.name)) for c in plan.columns]
    texts = [sql.SQL("{} AS {}").format(_output_text(v), _v(i)) for i, v in enumerate(values)]
    row = sql.SQL(", ").join(_v(i) for i in range(len(plan.columns)))
    keys = [sql.SQL("t.{}{} AS {}").format(_v(ki), C, _k(n)) for n, ki in enumerate(plan.key_index)]
    return sql.SQL("SELECT {}, t.*, (ROW({}))::text{} AS r FROM (SELECT {} FROM ({}) AS p) AS t").format(
        sql.SQL(", ").join(keys), row, C, sql.SQL(", ").join(texts), projected)


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
    ).format(sql.Identifier(SRC_CHUNKS), keys)


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
    ).format(keys=keys, names=names, marker_cols=marker_cols, src=sql.Identifier(SRC_CHUNKS),
             row_cols=row_cols, keyed=_keyed(plan, "target"))


def target_chunks(plan: TablePlan) -> sql.Composed:
    return sql.SQL(
        "CREATE TEMPORARY TABLE {} AS SELECT chunk, count(*) AS cnt, "
        "md5(string_agg(md5(r), '' ORDER BY {keys}, r)) AS hash FROM ({assigned}) AS x "
        "WHERE b IS NULL GROUP BY chunk"
    ).format(sql.Identifier(TGT_CHUNKS), keys=_key_order(plan), assigned=_assigned(plan, with_values=False))


def differing_chunks() -> sql.Composed:
    return sql.SQL(
        "CREATE TEMPORARY TABLE {bad} AS SELECT coalesce(s.chunk, t.chunk) AS chunk "
        "FROM pg_temp.{src} AS s FULL JOIN pg_temp.{tgt} AS t ON t.chunk = s.chunk "
        "WHERE s.hash IS DISTINCT FROM t.hash OR s.cnt IS DISTINCT FROM t.cnt"
    ).format(bad=sql.Identifier(BAD_CHUNKS), src=sql.Identifier(SRC_CHUNKS), tgt=sql.Identifier(TGT_CHUNKS))


def _chunks(chunks: Sequence[int]) -> sql.Composed:
    """The chunk numbers as a bigint[] literal (inlined: statements carrying names take no parameters)."""
    return sql.SQL("{}::bigint[]").format(sql.Literal("{" + ",".join(str(int(c)) for c in chunks) + "}"))


def target_rows(plan: TablePlan, chunks: Sequence[int]) -> sql.Composed:
    """The rows of the differing `chunks` in the target."""
    vals = sql.SQL(", ").join(sql.SQL("x.{}").format(_v(i)) for i in range(len(plan.columns)))
    # Ordered as the window already sorted them (chunk only grows along it), so no second sort.
    return sql.SQL(
        "SELECT x.chunk, {vals} FROM ({assigned}) AS x "
        "WHERE x.b IS NULL AND x.chunk = ANY({chunks}) ORDER BY {keys}, x.b, x.r"
    ).format(vals=vals, assigned=_assigned(plan, with_values=True), chunks=_chunks(chunks),
             keys=_key_order(plan, "x."))


def source_rows(plan: TablePlan, chunks: Sequence[int]) -> sql.Composed:
    """The rows of the differing `chunks` in the source."""
    vals = sql.SQL(", ").join(sql.SQL("a.{}").format(_v(i)) for i in range(len(plan.columns)))
    # `= ANY` of a constant array is hashed by PostgreSQL (14+); ordered as the window sorted them.
    return sql.SQL(
        "SELECT a.chunk, {vals} FROM (SELECT s.*, (row_number() OVER (ORDER BY {keys}, r) - 1) / {n} AS chunk "
        "FROM ({keyed}) AS s) AS a WHERE a.chunk = ANY({chunks}) ORDER BY {akeys}, a.r"
    ).format(vals=vals, keys=_key_order(plan), n=sql.Literal(plan.chunk_rows), keyed=_keyed(plan, "source"),
             chunks=_chunks(chunks), akeys=_key_order(plan, "a."))

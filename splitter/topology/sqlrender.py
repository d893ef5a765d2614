"""SQL rendering of the topology: one definition of each target column serves backfill, apply and verify.

Owns: turning a `Route` (target table, key, column expressions) into psycopg.sql statements:
  * the *source relation*: the source row with its column types, where types the service
    database cannot know (enums and other user-defined types of the source) are read as text;
    backfill reads it from the source table, apply from a staging table of text values, so the
    expressions see the same names and types in both places;
  * the projection `SELECT <expr> AS <target column> ... FROM (<source relation>) AS src`, with `DEFAULT`
    put in (`column_expression`) and the rows the route's row filter keeps or drops (`row_filter`);
  * the apply statements (delete by key, upsert, delete of rows the filter drops), within the `WriteScope`
    the stream has in the target table (frozen columns only inserted, rows perhaps only updated); the
    partial updates' statements are `splitter.topology.partial_sql`'s, built on these.
Identifiers are always quoted through psycopg.sql.  Expressions are the topology's own SQL,
validated by pglast at load.  Type names come from the catalogs (format_type) or a record's header and
pass `type_names`'s grammar before use.  Must not: execute anything or hold connections.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from psycopg import sql

from splitter.core.envelope import ColumnSchema, RelationSchema
from splitter.core.errors import ConfigurationError, MalformedMessageError
from splitter.topology.expressions import expression_columns, uses_default, with_default
from splitter.topology.model import FULL, Route, WriteScope
from splitter.topology.type_names import shown, type_name_problem

ROW_COL = "__row"
KIND_COL = "__kind"
UNCHANGED_COL = "__unchanged"
OLD_PREFIX = "__old_"

KIND_DELETE = "D"
KIND_UPSERT = "U"
KIND_PARTIAL = "P"


@functools.lru_cache(maxsize=1024)
def checked_type(type_name: str) -> sql.SQL:
    """`type_name` as SQL, once `type_names` accepts it as a type name format_type prints (it may have come off
    the wire: the one way a type name reaches SQL text)."""
    problem = type_name_problem(type_name)
    if problem is not None:
        raise MalformedMessageError(f"{shown(type_name)} is not a SQL type name: {problem}")
    return sql.SQL(type_name)


@dataclass(frozen=True)
class TargetColumn:
    """A column of the target table as the service database declares it."""

    name: str
    # Cast applied to the expression: set for user-defined types (enums) that have no assignment
    # cast from text; None where PostgreSQL's assignment casts already do the right thing.
    cast: str | None = None
    # What `DEFAULT` in the column's expression stands for (`expressions.default_value`, read from the
    # service's catalog); None when the expression has no DEFAULT.
    default: str | None = None

    def uncast(self) -> TargetColumn:
        """The column as the source side computes it: the target's types do not exist there."""
        return replace(self, cast=None)


def column_expression(route: Route, column: TargetColumn) -> str:
    """The SQL of `column`'s expression, with `DEFAULT` replaced by the target column's default."""
    expr = route.table.columns[column.name]
    if column.default is not None:
        return with_default(expr, column.default)
    if uses_default(expr):
        raise ConfigurationError(f"{route.table.origin}: {route.describe()}.{column.name}: expression {expr!r} "
                                 "says DEFAULT, but the target column's default was not read")
    return expr


def topology_sql(text: str) -> sql.SQL:
    """A topology expression or row filter as SQL text.

    psycopg reads `%` as a placeholder's sign in a statement executed with parameters (and leaves the text
    alone in one executed without), and neither `sql.Identifier` nor `sql.Literal` doubles it.  So one rule
    holds for every statement that carries topology SQL or a source's or service's names (`a % 2`, `LIKE
    'x%'`, a column "disc%"): it takes no parameters; values go in as `sql.Literal`."""
    return sql.SQL(text)


def qualified(schema: str, table: str) -> sql.Identifier:
    return sql.Identifier(schema, table)


def _expr(route: Route, column: TargetColumn) -> sql.Composable:
    expression: sql.Composable = sql.SQL("({})").format(topology_sql(column_expression(route, column)))
    if column.cast:
        expression = sql.SQL("{}::{}").format(expression, checked_type(column.cast))
    return expression


# Which source rows a projection yields, by the route's row filter (`Table.where`).
ROWS_KEPT = "kept"  # those the filter keeps (every row when the route has none)
ROWS_DROPPED = "dropped"  # those it leaves out (none when the route has none)
ROWS_ALL = "all"  # every row: what is matched by key alone (deletes, old keys)


def row_filter(route: Route, rows: str) -> sql.Composable | None:
    """The WHERE condition choosing `rows` of the source relation, None for every row.  NULL counts as false,
    as in PostgreSQL's publication row filters."""
    condition = route.table.where
    if rows == ROWS_ALL or (condition is None and rows == ROWS_KEPT):
        return None
    if condition is None:
        return sql.SQL("false")
    kept = sql.SQL("coalesce(({}), false)").format(topology_sql(condition))
    return kept if rows == ROWS_KEPT else sql.SQL("NOT {}").format(kept)


def projection(route: Route, target_columns: Sequence[TargetColumn], relation_sql: sql.Composable,
               extra: Sequence[sql.Composable] = (), rows: str = ROWS_KEPT) -> sql.Composed:
    """SELECT of every target column's expression over the `rows` of the source relation `relation_sql`."""
    items: list[sql.Composable] = list(extra)
    items += [sql.SQL("{} AS {}").format(_expr(route, c), sql.Identifier(c.name)) for c in target_columns]
    select = sql.SQL("SELECT {} FROM ({}) AS src").format(sql.SQL(", ").join(items), relation_sql)
    condition = row_filter(route, rows)
    return select if condition is None else sql.SQL("{} WHERE {}").format(select, condition)


def source_table_relation(schema: str, table: str, columns: Sequence[ColumnSchema]) -> sql.Composed:
    """The source relation read from the source table itself (backfill, verify)."""
    items = [
        sql.SQL("{}::{} AS {}").format(sql.Identifier(c.name), checked_type(c.sql_type), sql.Identifier(c.name))
        for c in columns
    ]
    return sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(items), qualified(schema, table))


def backfill_select(route: Route, source_columns: Sequence[ColumnSchema],
                    target_columns: Sequence[TargetColumn]) -> sql.Composed:
    """The query, run in the source, whose rows in COPY text form are the target table's rows.

    No target-type casts here: the target's types do not exist in the source; COPY's text input
    in the target does the same conversion the apply's explicit cast does.
    """
    relation = source_table_relation(route.source_schema, route.source_table, source_columns)
    return projection(route, [c.uncast() for c in target_columns], relation)


# --- apply: staging of text values --------------------------------------------------------------

def stage_name(relation: RelationSchema) -> str:
    """Temporary staging table for one source relation shape (a schema change gets a new one)."""
    digest = functools.reduce(lambda h, b: (h * 131 + b) % (1 << 40), relation.header_bytes(), 7)
    return f"splitter_stage_{relation.table[:30]}_{digest:x}"


def stage_columns(relation: RelationSchema) -> list[str]:
    """Column order of the staging table (also the COPY column order)."""
    return [
        ROW_COL, KIND_COL, UNCHANGED_COL,
        *(c.name for c in relation.columns),
        *(OLD_PREFIX + k for k in relation.key_columns),
    ]


def create_stage(relation: RelationSchema) -> sql.Composed:
    cols = [
        sql.SQL("{} integer").format(sql.Identifier(ROW_COL)),
        sql.SQL("{} text").format(sql.Identifier(KIND_COL)),
        sql.SQL("{} text[]").format(sql.Identifier(UNCHANGED_COL)),
        *(sql.SQL("{} text").format(sql.Identifier(c.name)) for c in relation.columns),
        *(sql.SQL("{} text").format(sql.Identifier(OLD_PREFIX + k)) for k in relation.key_columns),
    ]
    return sql.SQL("CREATE TEMPORARY TABLE IF NOT EXISTS {} ({}) ON COMMIT DELETE ROWS").format(
        sql.Identifier(stage_name(relation)), sql.SQL(", ").join(cols)
    )


def copy_into_stage(relation: RelationSchema) -> sql.Composed:
    return sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(stage_name(relation)),
        sql.SQL(", ").join(sql.Identifier(c) for c in stage_columns(relation)),
    )


def staged_relation(relation: RelationSchema, kind: str, *, old_key: bool = False,
                    unchanged: frozenset[str] | None = None) -> sql.Composed:
    """The source relation read from the staging table: text cast back to the source types; with `unchanged`,
    only the partial rows whose unchanged (unsent) columns are those."""
    def column(c: ColumnSchema) -> sql.Composable:
        stored = OLD_PREFIX + c.name if old_key and c.is_key else c.name
        return sql.SQL("s.{}::{} AS {}").format(
            sql.Identifier(stored), checked_type(c.sql_type), sql.Identifier(c.name))
    items = [sql.SQL("s.{}").format(sql.Identifier(ROW_COL)), *(column(c) for c in relation.columns)]
    where = sql.SQL("s.{} = {}").format(sql.Identifier(KIND_COL), sql.Literal(kind))
    if unchanged is not None:
        where = sql.SQL("{} AND s.{} = {}::text[]").format(
            where, sql.Identifier(UNCHANGED_COL), sql.Literal(sorted(unchanged)))
    return sql.SQL("SELECT {} FROM pg_temp.{} AS s WHERE {}").format(
        sql.SQL(", ").join(items), sql.Identifier(stage_name(relation)), where)


def key_match(route: Route, left: str, right: str, prefix: str = "") -> sql.Composed:
    return sql.SQL(" AND ").join(
        sql.SQL("{}.{} = {}.{}").format(
            sql.Identifier(left), sql.Identifier(k), sql.Identifier(right), sql.Identifier(prefix + k))
        for k in route.table.key
    )


def apply_delete(route: Route, relation: RelationSchema, target_columns: Sequence[TargetColumn],
                 scope: WriteScope = FULL) -> sql.Composed | None:
    """DELETE of the staged deletes' rows; None when `scope` applies no deletes (another service owns the rows)."""
    if not scope.rows:
        return None
    keys = [c for c in target_columns if c.name in route.table.key]
    staged = projection(route, keys, staged_relation(relation, KIND_DELETE), rows=ROWS_ALL)
    return sql.SQL("DELETE FROM {} AS t USING ({}) AS d WHERE {}").format(
        qualified(route.target_schema, route.target_table), staged, key_match(route, "t", "d"))


def apply_filtered_out(route: Route, relation: RelationSchema, target_columns: Sequence[TargetColumn],
                       scope: WriteScope = FULL) -> sql.Composed | None:
    """DELETE of the rows whose staged full row the route's filter leaves out: an update that moves a row out
    of the filter, or an insert or a backfilled row that never was in (a no-op then).  None without a filter,
    or when `scope` applies no deletes."""
    if route.table.where is None or not scope.rows:
        return None
    keys = [c for c in target_columns if c.name in route.table.key]
    staged = projection(route, keys, staged_relation(relation, KIND_UPSERT), rows=ROWS_DROPPED)
    return sql.SQL("DELETE FROM {} AS t USING ({}) AS d WHERE {}").format(
        qualified(route.target_schema, route.target_table), staged, key_match(route, "t", "d"))


def apply_upsert(route: Route, relation: RelationSchema, target_columns: Sequence[TargetColumn],
                 scope: WriteScope = FULL) -> sql.Composed | None:
    """The staged full rows into the target: an INSERT whose conflict updates every column but the key and
    `scope.frozen`; when `scope.rows` is False, an UPDATE of the rows that exist (it creates none, and a row
    it does not find is none of its business).  None when that UPDATE would set no column."""
    names = [c.name for c in target_columns]
    updated = [n for n in names if n not in route.table.key and n not in scope.frozen]
    if not scope.rows:
        if not updated:
            return None
        read = [c for c in target_columns if c.name in route.table.key or c.name in updated]
        return sql.SQL("UPDATE {} AS t SET {} FROM ({}) AS n WHERE {}").format(
            qualified(route.target_schema, route.target_table),
            sql.SQL(", ").join(sql.SQL("{} = n.{}").format(sql.Identifier(n), sql.Identifier(n)) for n in updated),
            projection(route, read, staged_relation(relation, KIND_UPSERT)), key_match(route, "t", "n"))
    staged = projection(route, target_columns, staged_relation(relation, KIND_UPSERT))
    if updated:
        conflict = sql.SQL("DO UPDATE SET {}").format(sql.SQL(", ").join(
            sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(n), sql.Identifier(n)) for n in updated))
    else:
        conflict = sql.Composed([sql.SQL("DO NOTHING")])
    # OVERRIDING SYSTEM VALUE: the row's identity value is the source's, also where the target's identity
    # column is GENERATED ALWAYS (it changes nothing for other columns).
    return sql.SQL("INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE {} ON CONFLICT ({}) {}").format(
        qualified(route.target_schema, route.target_table),
        sql.SQL(", ").join(sql.Identifier(n) for n in names),
        staged,
        sql.SQL(", ").join(sql.Identifier(k) for k in route.table.key),
        conflict,
    )


def truncate_target(route: Route, scope: WriteScope = FULL) -> sql.Composed | None:
    """Emptying the target table; None when `scope` deletes no rows (another service owns them)."""
    if not scope.rows:
        return None
    # DELETE rather than TRUNCATE: no ACCESS EXCLUSIVE lock on a table the service may be reading.
    return sql.SQL("DELETE FROM {}").format(qualified(route.target_schema, route.target_table))


def check_route_against(route: Route, relation_columns: Mapping[str, ColumnSchema]) -> list[str]:
    """Problems of a route against its source relation: unknown columns, keys outside the row key."""
    problems = []
    for target_col, expr in route.table.columns.items():
        missing = expression_columns(expr) - relation_columns.keys()
        if missing:
            problems.append(
                f"{route.table.origin}: {route.describe()}.{target_col}: expression {expr!r} reads "
                f"column(s) {', '.join(sorted(missing))} that {route.source_schema}.{route.source_table} lacks")
    if route.table.where is not None:
        missing = route.table.filter_columns() - relation_columns.keys()
        if missing:
            problems.append(
                f"{route.table.origin}: {route.describe()}: row filter {route.table.where!r} reads column(s) "
                f"{', '.join(sorted(missing))} that {route.source_schema}.{route.source_table} lacks")
    pk = {n for n, c in relation_columns.items() if c.is_key}
    outside = route.table.key_source_columns() - pk
    if outside:
        problems.append(
            f"{route.table.origin}: {route.describe()}: key expressions read {', '.join(sorted(outside))}, "
            f"which is not in the source row key ({', '.join(sorted(pk))}: its primary key, or the index "
            f"of its REPLICA IDENTITY USING INDEX, whose columns alone a delete carries)")
    return problems


__all__ = [
    "ConfigurationError",
    "TargetColumn",
    "apply_delete",
    "apply_filtered_out",
    "apply_upsert",
    "backfill_select",
    "check_route_against",
    "column_expression",
    "copy_into_stage",
    "create_stage",
    "key_match",
    "projection",
    "source_table_relation",
    "stage_columns",
    "staged_relation",
    "topology_sql",
    "truncate_target",
]

"""SQL rendering of the topology: one definition of each target column serves backfill, apply and verify.

Owns: turning a `Route` (target table, key, column expressions) into psycopg.sql statements:
  * the *source relation*: the source row with its column types, where types the service
    database cannot know (enums and other user-defined types of the source) are read as text;
    backfill reads it from the source table, apply from a staging table of text values, so the
    expressions see the same names and types in both places;
  * the projection `SELECT <expr> AS <target column> ... FROM (<source relation>) AS src`;
  * the apply statements (delete by key, update of partially known rows, upsert), within the `WriteScope`
    the stream has in the target table (frozen columns only inserted, rows perhaps only updated).
Identifiers are always quoted through psycopg.sql.  Expressions are the topology's own SQL,
validated by pglast at load.  Type names come from the catalogs (format_type) or a record's header and
pass `type_names`'s grammar before use.  Must not: execute anything or hold connections.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from psycopg import sql

from splitter.core.envelope import ColumnSchema, RelationSchema
from splitter.core.errors import ConfigurationError, MalformedMessageError
from splitter.topology.expressions import expression_columns
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


def qualified(schema: str, table: str) -> sql.Identifier:
    return sql.Identifier(schema, table)


def _expr(route: Route, column: TargetColumn) -> sql.Composable:
    expression: sql.Composable = sql.SQL("({})").format(sql.SQL(route.table.columns[column.name]))
    if column.cast:
        expression = sql.SQL("{}::{}").format(expression, checked_type(column.cast))
    return expression


def projection(route: Route, target_columns: Sequence[TargetColumn], relation_sql: sql.Composable,
               extra: Sequence[sql.Composable] = ()) -> sql.Composed:
    """SELECT of every target column's expression over the source relation `relation_sql`."""
    items: list[sql.Composable] = list(extra)
    items += [sql.SQL("{} AS {}").format(_expr(route, c), sql.Identifier(c.name)) for c in target_columns]
    return sql.SQL("SELECT {} FROM ({}) AS src").format(sql.SQL(", ").join(items), relation_sql)


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
    return projection(route, [TargetColumn(c.name) for c in target_columns], relation)


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


def _staged_relation(relation: RelationSchema, kind: str, *, old_key: bool = False,
                     unchanged: bool = False) -> sql.Composed:
    """The source relation read from the staging table: text cast back to the source types."""
    def column(c: ColumnSchema) -> sql.Composable:
        stored = OLD_PREFIX + c.name if old_key and c.is_key else c.name
        return sql.SQL("s.{}::{} AS {}").format(
            sql.Identifier(stored), checked_type(c.sql_type), sql.Identifier(c.name))
    items = [sql.SQL("s.{}").format(sql.Identifier(ROW_COL)), *(column(c) for c in relation.columns)]
    where = sql.SQL("s.{} = {}").format(sql.Identifier(KIND_COL), sql.Literal(kind))
    if unchanged:
        where = sql.SQL("{} AND s.{} = %s::text[]").format(where, sql.Identifier(UNCHANGED_COL))
    return sql.SQL("SELECT {} FROM pg_temp.{} AS s WHERE {}").format(
        sql.SQL(", ").join(items), sql.Identifier(stage_name(relation)), where)


def _key_match(route: Route, left: str, right: str, prefix: str = "") -> sql.Composed:
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
    staged = projection(route, keys, _staged_relation(relation, KIND_DELETE))
    return sql.SQL("DELETE FROM {} AS t USING ({}) AS d WHERE {}").format(
        qualified(route.target_schema, route.target_table), staged, _key_match(route, "t", "d"))


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
            projection(route, read, _staged_relation(relation, KIND_UPSERT)), _key_match(route, "t", "n"))
    staged = projection(route, target_columns, _staged_relation(relation, KIND_UPSERT))
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


def columns_known_despite(route: Route, target_columns: Sequence[TargetColumn],
                          unchanged: frozenset[str]) -> list[TargetColumn]:
    """Target columns whose expressions read none of the `unchanged` (unknown) source columns."""
    return [c for c in target_columns if not (expression_columns(route.table.columns[c.name]) & unchanged)]


def apply_partial(route: Route, relation: RelationSchema, target_columns: Sequence[TargetColumn],
                  unchanged: frozenset[str], scope: WriteScope = FULL) -> sql.Composed | None:
    """UPDATE of rows whose `unchanged` source columns are unknown; they keep their target values.

    Takes two parameters, both the sorted list of unchanged column names the staged rows carry.
    Returns the staged row numbers (`__row`) of the updates that found their row.  Returns None
    when every target column depends on the unknown columns (nothing to update, except possibly the
    key, which `columns_known_despite` always keeps) or is in `scope.frozen` (never updated).
    """
    kept = [c for c in columns_known_despite(route, target_columns, unchanged) if c.name not in scope.frozen]
    if not kept:
        return None
    new, old_aliased = _partial_new_and_old(route, relation, target_columns, kept)
    return sql.SQL("UPDATE {} AS t SET {} FROM ({}) AS n JOIN ({}) AS o USING ({}) WHERE {} RETURNING n.{}").format(
        qualified(route.target_schema, route.target_table),
        sql.SQL(", ").join(sql.SQL("{} = n.{}").format(sql.Identifier(c.name), sql.Identifier(c.name))
                           for c in kept),
        new, old_aliased, sql.Identifier(ROW_COL),
        _key_match(route, "t", "o", OLD_PREFIX), sql.Identifier(ROW_COL),
    )


def _partial_new_and_old(route: Route, relation: RelationSchema, target_columns: Sequence[TargetColumn],
                         kept: Sequence[TargetColumn]) -> tuple[sql.Composed, sql.Composed]:
    """Partial rows' new values (`kept` columns) and their old keys (as __old_<key>), both with __row."""
    keys = [c for c in target_columns if c.name in route.table.key]
    row = sql.Identifier(ROW_COL)
    new = projection(route, kept, _staged_relation(relation, KIND_PARTIAL, unchanged=True),
                     extra=[sql.SQL("src.{}").format(row)])
    old = projection(route, keys, _staged_relation(relation, KIND_PARTIAL, old_key=True, unchanged=True),
                     extra=[sql.SQL("src.{}").format(row)])
    old_aliased = sql.SQL("SELECT o.{}, {} FROM ({}) AS o").format(
        row,
        sql.SQL(", ").join(sql.SQL("o.{} AS {}").format(sql.Identifier(k.name), sql.Identifier(OLD_PREFIX + k.name))
                           for k in keys),
        old,
    )
    return new, old_aliased


def delete_partial_move_targets(route: Route, relation: RelationSchema, target_columns: Sequence[TargetColumn],
                                scope: WriteScope = FULL) -> sql.Composed | None:
    """DELETE the rows at the new keys of partial updates that move a row to another key.

    Only for a replay over a newer state: there the row a move goes to may already exist (the present),
    while at this point of history it did not.  Takes the same two parameters as `apply_partial`.  None
    when `scope` deletes no rows or never updates the key (its updates move no row).
    """
    keys = [c for c in target_columns if c.name in route.table.key]
    if not scope.rows or any(k.name in scope.frozen for k in keys):
        return None
    new, old_aliased = _partial_new_and_old(route, relation, target_columns, keys)
    moved = sql.SQL(" OR ").join(
        sql.SQL("n.{} IS DISTINCT FROM o.{}").format(sql.Identifier(k.name), sql.Identifier(OLD_PREFIX + k.name))
        for k in keys)
    return sql.SQL("DELETE FROM {} AS t USING ({}) AS n JOIN ({}) AS o USING ({}) WHERE ({}) AND {}").format(
        qualified(route.target_schema, route.target_table), new, old_aliased, sql.Identifier(ROW_COL), moved,
        _key_match(route, "t", "n"))


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
    "apply_partial",
    "apply_upsert",
    "backfill_select",
    "check_route_against",
    "copy_into_stage",
    "create_stage",
    "projection",
    "source_table_relation",
    "stage_columns",
    "truncate_target",
]

"""SQL of partial updates: an update whose unchanged TOASTed source columns the change log does not carry.

Owns: the statements for staged partial rows (`KIND_PARTIAL`): the UPDATE of the columns the change does
determine (`apply_partial`), the deletes at keys a replayed move goes to (`delete_partial_move_targets`)
and at rows a route's row filter no longer keeps (`delete_partial_filtered_out`, with `partial_rows` and
`partial_rows_kept`: which partial updates the filter can judge).  Built on `sqlrender`'s projection and
staging; the same rules: identifiers through psycopg.sql, expressions the topology's own.  Must not:
execute anything or hold connections.
"""

from __future__ import annotations

from collections.abc import Sequence

from psycopg import sql

from splitter.core.envelope import RelationSchema
from splitter.core.errors import FatalError
from splitter.topology.expressions import expression_columns
from splitter.topology.model import FULL, Route, WriteScope
from splitter.topology.sqlrender import (
    KIND_PARTIAL,
    OLD_PREFIX,
    ROW_COL,
    ROWS_ALL,
    ROWS_DROPPED,
    ROWS_KEPT,
    TargetColumn,
    key_match,
    projection,
    qualified,
    staged_relation,
)


def columns_known_despite(route: Route, target_columns: Sequence[TargetColumn],
                          unchanged: frozenset[str]) -> list[TargetColumn]:
    """Target columns whose expressions read none of the `unchanged` (unknown) source columns."""
    return [c for c in target_columns if not (expression_columns(route.table.columns[c.name]) & unchanged)]


def partial_rows(route: Route, unchanged: frozenset[str]) -> str:
    """Which partial updates with `unchanged` columns apply, by the route's row filter: those it keeps, when
    it reads none of them; all of them, when it reads only those (the row's place in or out of the filter
    cannot have changed, so it is in the target exactly when it was, and one that finds no row was out:
    `outside_filter_when_missing`).  Raises FatalError when the filter reads both unchanged and sent columns
    (pgoutput sends every value that is not TOASTed, changed or not): whether the row is in cannot be known
    from the change."""
    reads = route.table.filter_columns()
    if not reads & unchanged:
        return ROWS_KEPT
    if reads <= unchanged:
        return ROWS_ALL
    raise FatalError(
        f"{route.describe()}: an update leaves {', '.join(sorted(reads & unchanged))} unchanged (TOASTed, not "
        f"sent) and sends {', '.join(sorted(reads - unchanged))}, and the row filter {route.table.where!r} "
        f"reads both, so whether the row is in the target cannot be known; set REPLICA IDENTITY FULL on "
        f"{route.source_schema}.{route.source_table} (its updates then carry every column)")


def outside_filter_when_missing(route: Route, unchanged: frozenset[str]) -> bool:
    """Whether a partial update with `unchanged` columns that finds no row is a row the route's filter leaves
    out (it was never in the target), not a row missing from it: so when the filter reads only unchanged
    columns, whose verdict the update cannot have changed (`partial_rows` is ROWS_ALL)."""
    return route.table.where is not None and partial_rows(route, unchanged) == ROWS_ALL


def apply_partial(route: Route, relation: RelationSchema, target_columns: Sequence[TargetColumn],
                  unchanged: frozenset[str], scope: WriteScope = FULL) -> sql.Composed | None:
    """UPDATE of rows whose `unchanged` source columns are unknown; they keep their target values.

    Returns the staged row numbers (`__row`) of the updates that found their row.  Returns None
    when every target column depends on the unknown columns (nothing to update, except possibly the
    key, which `columns_known_despite` always keeps) or is in `scope.frozen` (never updated).  Only the
    updates `partial_rows` says apply; `delete_partial_filtered_out` removes the rows the others leave.
    """
    kept = [c for c in columns_known_despite(route, target_columns, unchanged) if c.name not in scope.frozen]
    if not kept:
        return None
    new, old_aliased = _partial_new_and_old(route, relation, target_columns, kept, partial_rows(route, unchanged),
                                            unchanged)
    return sql.SQL("UPDATE {} AS t SET {} FROM ({}) AS n JOIN ({}) AS o USING ({}) WHERE {} RETURNING n.{}").format(
        qualified(route.target_schema, route.target_table),
        sql.SQL(", ").join(sql.SQL("{} = n.{}").format(sql.Identifier(c.name), sql.Identifier(c.name))
                           for c in kept),
        new, old_aliased, sql.Identifier(ROW_COL),
        key_match(route, "t", "o", OLD_PREFIX), sql.Identifier(ROW_COL),
    )


def _partial_new_and_old(route: Route, relation: RelationSchema, target_columns: Sequence[TargetColumn],
                         kept: Sequence[TargetColumn], rows: str,
                         unchanged: frozenset[str]) -> tuple[sql.Composed, sql.Composed]:
    """The `rows` of the partial rows: new values (`kept` columns) and old keys (as __old_<key>), both with
    __row (the filter judges the new row; the old keys join them whatever it says)."""
    keys = [c for c in target_columns if c.name in route.table.key]
    row = sql.Identifier(ROW_COL)
    new = projection(route, kept, staged_relation(relation, KIND_PARTIAL, unchanged=unchanged),
                     extra=[sql.SQL("src.{}").format(row)], rows=rows)
    old = projection(route, keys, staged_relation(relation, KIND_PARTIAL, old_key=True, unchanged=unchanged),
                     extra=[sql.SQL("src.{}").format(row)], rows=ROWS_ALL)
    old_aliased = sql.SQL("SELECT o.{}, {} FROM ({}) AS o").format(
        row,
        sql.SQL(", ").join(sql.SQL("o.{} AS {}").format(sql.Identifier(k.name), sql.Identifier(OLD_PREFIX + k.name))
                           for k in keys),
        old,
    )
    return new, old_aliased


def delete_partial_move_targets(route: Route, relation: RelationSchema, target_columns: Sequence[TargetColumn],
                                unchanged: frozenset[str], scope: WriteScope = FULL) -> sql.Composed | None:
    """DELETE the rows at the new keys of partial updates that move a row to another key.

    Only for a replay over a newer state: there the row a move goes to may already exist (the present),
    while at this point of history it did not.  None when `scope` deletes no rows or never updates the key
    (its updates move no row).
    """
    keys = [c for c in target_columns if c.name in route.table.key]
    if not scope.rows or any(k.name in scope.frozen for k in keys):
        return None
    new, old_aliased = _partial_new_and_old(route, relation, target_columns, keys, ROWS_KEPT, unchanged)
    moved = sql.SQL(" OR ").join(
        sql.SQL("n.{} IS DISTINCT FROM o.{}").format(sql.Identifier(k.name), sql.Identifier(OLD_PREFIX + k.name))
        for k in keys)
    return sql.SQL("DELETE FROM {} AS t USING ({}) AS n JOIN ({}) AS o USING ({}) WHERE ({}) AND {}").format(
        qualified(route.target_schema, route.target_table), new, old_aliased, sql.Identifier(ROW_COL), moved,
        key_match(route, "t", "n"))


def delete_partial_filtered_out(route: Route, relation: RelationSchema, target_columns: Sequence[TargetColumn],
                                unchanged: frozenset[str], scope: WriteScope = FULL) -> sql.Composed | None:
    """DELETE the rows at the old keys of partial updates whose new row the route's filter leaves out (moved
    out of it).  None without a filter to judge them by
    (none, or one reading only unchanged columns: `partial_rows`) or when `scope` deletes no rows."""
    if route.table.where is None or not scope.rows or partial_rows(route, unchanged) != ROWS_KEPT:
        return None
    keys = [c for c in target_columns if c.name in route.table.key]
    new, old_aliased = _partial_new_and_old(route, relation, target_columns, keys, ROWS_DROPPED, unchanged)
    return sql.SQL("DELETE FROM {} AS t USING ({}) AS n JOIN ({}) AS o USING ({}) WHERE {}").format(
        qualified(route.target_schema, route.target_table), new, old_aliased, sql.Identifier(ROW_COL),
        key_match(route, "t", "o", OLD_PREFIX))


def partial_rows_kept(route: Route, relation: RelationSchema, target_columns: Sequence[TargetColumn],
                      unchanged: frozenset[str]) -> sql.Composed:
    """The staged row numbers (`__row`) of the partial updates with `unchanged` columns the route's row filter
    keeps."""
    keys = [c for c in target_columns if c.name in route.table.key]
    return projection(route, keys, staged_relation(relation, KIND_PARTIAL, unchanged=unchanged),
                      extra=[sql.SQL("src.{}").format(sql.Identifier(ROW_COL))], rows=ROWS_KEPT)


__all__ = [
    "apply_partial",
    "columns_known_despite",
    "delete_partial_filtered_out",
    "delete_partial_move_targets",
    "outside_filter_when_missing",
    "partial_rows",
    "partial_rows_kept",
]

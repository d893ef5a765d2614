"""Which rows of a service table a backfill chunk removes: those whose source key lies in the chunk's key range
but which the source no longer holds.

A chunk of `splitter backfill` holds every source row with a key in (the previous chunk's last key, its own
last key], in the source's key order; a target row whose source key lies in that range and that the chunk
does not hold is a row the source lost (a delete the service never applied, e.g. one in a stretch of the
change log retention deleted).  Owns: reading a route's target key back into the source key (`key_sources`:
each source key column copied exactly by one target key column, found by `splitter.topology.inversion`, the
reverse stream's analysis), whether the service database can order keys as the source's chunk reads do
(`range_problems`: not for a key of a type the source defines itself, nor for text the source sorts by a
collation other than code point order), and the read of the source keys of target rows in a range that a
given set of keys lacks (`absent_keys`).  Must not: decide which keys are present (the worker does, from the
chunk and the stream inside the watermark window) or delete anything (the worker turns the keys into deletes
of its batch, applied with the chunk).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import orjson
import psycopg
from psycopg import sql

from splitter.core.envelope import RelationSchema
from splitter.core.errors import FatalError
from splitter.topology.inversion import inverse_source_column
from splitter.topology.model import Route
from splitter.topology.sqlrender import checked_type, qualified

Key = tuple[str | None, ...]

# libc locales that sort by code point (glibc's C.UTF-8 is defined so); the builtin provider always does.
CODE_POINT_LOCALES = ["C", "POSIX", "C.UTF-8", "C.utf8"]

_COLUMNS_SQL = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.atttypid >= 16384,
       a.attcollation = 0 OR coalesce((
           SELECT CASE co.collprovider
                    WHEN 'b' THEN true
                    WHEN 'c' THEN co.collcollate::text = ANY(%(locales)s)
                    WHEN 'd' THEN (SELECT CASE coalesce(to_jsonb(d) ->> 'datlocprovider', 'c')
                                            WHEN 'b' THEN true
                                            WHEN 'c' THEN d.datcollate::text = ANY(%(locales)s)
                                            ELSE false END
                                     FROM pg_database d WHERE d.datname = current_database())
                    ELSE false END
             FROM pg_collation co WHERE co.oid = a.attcollation), false)
  FROM pg_attribute a
  JOIN pg_class c ON c.oid = a.attrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = %(schema)s AND c.relname = %(table)s AND a.attname = ANY(%(columns)s)
   AND a.attnum > 0 AND NOT a.attisdropped
"""


@dataclass(frozen=True)
class KeyRange:
    """Source keys above `after` (from the first key if None) up to `through` included (to the last if None)."""

    after: Key | None
    through: Key | None


@dataclass(frozen=True)
class _Column:
    type_name: str  # as format_type spells it, with its modifier
    user_defined: bool
    code_point_order: bool  # not text at all, or text sorted by code point ("C" and its kin)


def _columns(conn: psycopg.Connection, schema: str, table: str, names: Sequence[str]) -> dict[str, _Column]:
    rows = conn.execute(_COLUMNS_SQL, {"locales": CODE_POINT_LOCALES, "schema": schema, "table": table,
                                       "columns": list(names)}).fetchall()
    return {r[0]: _Column(r[1], bool(r[2]), bool(r[3])) for r in rows}


def key_sources(route: Route, relation: RelationSchema) -> dict[str, str] | str:
    """source key column → the target key column that copies it exactly; or why the route has no such map."""
    found: dict[str, str] = {}
    for target_key in route.table.key:
        expr = route.table.columns[target_key]
        inverse = inverse_source_column(expr)
        if inverse is None or not inverse[1]:
            return f"its key column {target_key!r} is computed ({expr!r}), not a copy of a source key column"
        found.setdefault(inverse[0], target_key)
    if len(found) != len(route.table.key) or set(found) != set(relation.key_columns):
        return (f"its key ({', '.join(route.table.key)}) does not copy the source primary key "
                f"({', '.join(relation.key_columns)}) column for column")
    return found


def range_problems(source: psycopg.Connection, routes: Sequence[Route], relation: RelationSchema) -> list[str]:
    """Why target rows of `routes` cannot be compared with the source's key ranges (empty: they can)."""
    problems = []
    facts = _columns(source, relation.schema, relation.table, relation.key_columns)
    for name in relation.key_columns:
        column = facts.get(name)
        if column is None:
            problems.append(f"source key column {name} of {relation.qualified} is gone")
        elif column.user_defined:
            problems.append(f"source key column {relation.qualified}.{name} is of type {column.type_name}, which "
                            f"the source defines itself: a service database cannot order keys as the source does")
        elif not column.code_point_order:
            problems.append(f"source key column {relation.qualified}.{name} ({column.type_name}) sorts by a "
                            f"collation other than code point order (C): a service database cannot order keys "
                            f"as the source does")
    for route in routes:
        mapped = key_sources(route, relation)
        if isinstance(mapped, str):
            problems.append(f"{route.describe()}: {mapped}")
    return problems


def _collatable(conn: psycopg.Connection, type_names: Sequence[str]) -> list[bool]:
    rows = conn.execute("SELECT ty.typcollation <> 0 FROM unnest(%s::text[]) WITH ORDINALITY AS u(name, n) "
                        "JOIN pg_type ty ON ty.oid = to_regtype(u.name) ORDER BY u.n", (list(type_names),)).fetchall()
    return [bool(r[0]) for r in rows]


def _source_key_expression(target_column: str, column: _Column, source_type: str, collatable: bool) -> sql.Composable:
    """A target key column as the source key column it copies, ordered as the source orders it."""
    stored = sql.SQL("t.{}").format(sql.Identifier(target_column))
    if column.type_name == source_type and column.code_point_order:
        return stored  # as the target stores it: its key index serves the range
    as_source = sql.SQL("({}::text::{})").format(stored, checked_type(source_type))
    return sql.SQL('({} COLLATE "C")').format(as_source) if collatable else as_source


def _absent_query(route: Route, relation: RelationSchema, exprs: Sequence[sql.Composable],
                  key_range: KeyRange, present_json: str) -> sql.Composed:
    # Values inlined, no parameters: the text carries source names, which may hold a `%` (sqlrender).
    types = {c.name: c.sql_type for c in relation.columns}

    def bound(key: Key) -> sql.Composed:
        return sql.SQL("ROW({})").format(sql.SQL(", ").join(
            sql.SQL("{}::{}").format(sql.Literal(v), checked_type(types[k]))
            for k, v in zip(relation.key_columns, key, strict=True)))
    row = sql.SQL("ROW({})").format(sql.SQL(", ").join(exprs))
    conditions: list[sql.Composable] = []
    if key_range.after is not None:
        conditions.append(sql.SQL("{} > {}").format(row, bound(key_range.after)))
    if key_range.through is not None:
        conditions.append(sql.SQL("{} <= {}").format(row, bound(key_range.through)))
    where = sql.SQL("WHERE {}").format(sql.SQL(" AND ").join(conditions)) if conditions else sql.SQL("")
    names = [sql.Identifier(f"k{i}") for i in range(len(exprs))]
    present = sql.SQL(", ").join(sql.SQL("(p.k->>{})::{}").format(sql.Literal(i), checked_type(types[k]))
                                 for i, k in enumerate(relation.key_columns))
    return sql.SQL("SELECT {texts} FROM (SELECT {exprs} FROM {target} AS t {where} "
                   "EXCEPT SELECT {present} FROM jsonb_array_elements({json}::jsonb) AS p(k)) AS a ({names})").format(
        texts=sql.SQL(", ").join(sql.SQL("a.{}::text").format(n) for n in names),
        exprs=sql.SQL(", ").join(exprs), target=qualified(route.target_schema, route.target_table),
        where=where, present=present, json=sql.Literal(present_json), names=sql.SQL(", ").join(names))


def absent_keys(conn: psycopg.Connection, routes: Sequence[Route], relation: RelationSchema, key_range: KeyRange,
                present: Collection[Key]) -> list[Key]:
    """Source keys (as the source's text) in `key_range` of rows the target tables of `routes` hold, less `present`.

    `routes` are the routes of `relation`'s table in one service database (`conn`); `present` are source keys
    in the source's text form, compared as values of the source key types.
    """
    types = {c.name: c.sql_type for c in relation.columns}
    keys = relation.key_columns
    collatable = _collatable(conn, [types[k] for k in keys])
    present_json = orjson.dumps([list(k) for k in present]).decode()
    found: set[Key] = set()
    for route in routes:
        mapped = key_sources(route, relation)
        if isinstance(mapped, str):
            raise FatalError(f"backfill of {relation.qualified}: {route.describe()}: {mapped}; its rows cannot be "
                             f"matched to source key ranges (the backfill refuses such a route when it starts: was "
                             f"the topology changed since?)")
        targets = [mapped[k] for k in keys]
        facts = _columns(conn, route.target_schema, route.target_table, targets)
        exprs = [_source_key_expression(t, facts[t], types[k], c) for t, k, c in zip(targets, keys, collatable,
                                                                                          strict=True)]
        found.update(tuple(r) for r in conn.execute(_absent_query(route, relation, exprs, key_range,
                                                                  present_json)).fetchall())
    return sorted(found, key=lambda k: tuple("" if v is None else v for v in k))

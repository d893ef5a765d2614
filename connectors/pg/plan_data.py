"""The plan's data checks: what rows of the source a target constraint would refuse, one aggregate query each.

Owns: running one check (`DataCheck`: a unique index, a NOT NULL, a length limit or an enum of one route's
target table) as a single read-only statement in the source, over the route's own projection (the
expressions the initial copy and the apply evaluate, rendered by `splitter.topology.sqlrender`), and
returning how many rows the target would refuse with the source primary keys of the first few
(`DataViolations`).  A unique index groups the projected values (NULLs never collide, as in the index);
a length limit counts values longer than it once trailing spaces are dropped (varchar and char input
truncate those silently); an enum counts values that are none of its labels.
Must not: write anything, decide which checks to run or what a count means (the plan's rules do), or
read the `splitter` schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from connectors.pg.inspect import QueryFailure, server_message
from splitter.core.envelope import RelationSchema
from splitter.topology.model import Route
from splitter.topology.sqlrender import TargetColumn, projection, source_table_relation

UNIQUE = "unique"
NOT_NULL = "not-null"
LENGTH = "length"
ENUM = "enum"

#: How many offending keys (or duplicated groups) a check names.
FIRST = 5

_KEY = "__splitter_key"


@dataclass(frozen=True)
class DataCheck:
    """One constraint of a route's target table, to be checked against the source's rows."""

    kind: str  # UNIQUE, NOT_NULL, LENGTH or ENUM
    route: Route
    columns: tuple[str, ...]  # target columns: the index's for UNIQUE, one otherwise
    constraint: str  # what the target calls it: the index name, "NOT NULL", the type
    # UNIQUE: the built-in target type each column is compared as (None: as the expression yields it).
    casts: tuple[str | None, ...] = ()
    # What DEFAULT stands for in each column's expression (`TargetColumn.default`; empty: none says DEFAULT).
    defaults: tuple[str | None, ...] = ()
    limit: int = 0  # LENGTH: characters the column holds
    labels: tuple[str, ...] = ()  # ENUM: the target enum's labels


@dataclass(frozen=True)
class DataViolations:
    """What a check found: rows the target would refuse, and the source keys of the first of them."""

    check: DataCheck
    key_columns: tuple[str, ...]  # the source primary key the keys are of
    rows: int = 0  # rows the target would refuse (UNIQUE: all but the first row of each duplicated value)
    groups: int = 0  # UNIQUE: values that occur more than once
    # The first offending keys in key order; UNIQUE: per duplicated value, its first and last keys.
    first: tuple[tuple[tuple[str | None, ...], ...], ...] = ()
    values: tuple[tuple[str | None, ...], ...] = ()  # UNIQUE: the duplicated values, as text, with `first`
    failure: QueryFailure | None = None


def _projected(check: DataCheck, relation: RelationSchema) -> sql.Composed:
    """The route's projection of the checked columns, with the source key as text[] alongside."""
    key = sql.SQL("ARRAY[{}]::text[] AS {}").format(
        sql.SQL(", ").join(sql.SQL("src.{}::text").format(sql.Identifier(k)) for k in relation.key_columns),
        sql.Identifier(_KEY))
    casts = check.casts or (None,) * len(check.columns)
    defaults = check.defaults or (None,) * len(check.columns)
    columns = [TargetColumn(name, cast, default)
               for name, cast, default in zip(check.columns, casts, defaults, strict=True)]
    route = check.route
    return projection(route, columns, source_table_relation(route.source_schema, route.source_table,
                                                            relation.columns), extra=[key])


def _row_query(check: DataCheck, relation: RelationSchema) -> sql.Composed:
    value = sql.SQL("p.{}").format(sql.Identifier(check.columns[0]))
    if check.kind == NOT_NULL:
        where = sql.SQL("{} IS NULL").format(value)
    elif check.kind == LENGTH:
        where = sql.SQL("length(rtrim({}::text, ' ')) > {}").format(value, sql.Literal(check.limit))
    else:
        where = sql.SQL("{} IS NOT NULL AND {}::text <> ALL({}::text[])").format(
            value, value, sql.Literal(list(check.labels)))
    # The window counts every offending row before the top-N sort keeps the first few.
    query = sql.SQL("SELECT p.{key}, count(*) OVER () FROM ({proj}) AS p WHERE {where} ORDER BY p.{key} "
                    "LIMIT {first}").format(key=sql.Identifier(_KEY), proj=_projected(check, relation), where=where,
                                            first=sql.Literal(FIRST))
    return query


def _unique_query(check: DataCheck, relation: RelationSchema) -> sql.Composed:
    values = [sql.SQL("p.{}").format(sql.Identifier(c)) for c in check.columns]
    key = sql.Identifier(_KEY)
    groups = sql.SQL("SELECT min(p.{key}) AS k1, max(p.{key}) AS k2, count(*) AS n, ARRAY[{texts}] AS v "
                     "FROM ({proj}) AS p WHERE {not_null} GROUP BY {values} HAVING count(*) > 1").format(
        key=key, proj=_projected(check, relation), values=sql.SQL(", ").join(values),
        texts=sql.SQL(", ").join(sql.SQL("{}::text").format(v) for v in values),
        not_null=sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(v) for v in values))
    return sql.SQL("SELECT d.k1, d.k2, d.v, count(*) OVER (), sum(d.n) OVER () FROM ({}) AS d ORDER BY d.k1 "
                   "LIMIT {}").format(groups, sql.Literal(FIRST))


def run_check(conn: psycopg.Connection[Any], check: DataCheck, relation: RelationSchema,
              dsn: str) -> DataViolations:
    """Run `check` over the source table's rows (read only); why it could not run goes in `failure`."""
    keys = tuple(relation.key_columns)
    try:
        if check.kind == UNIQUE:
            rows = conn.execute(_unique_query(check, relation)).fetchall()
            if not rows:
                return DataViolations(check, keys)
            groups, total = int(rows[0][3]), int(rows[0][4])
            first = tuple((tuple(k1), tuple(k2)) for k1, k2, *_ in rows)
            return DataViolations(check, keys, rows=total - groups, groups=groups, first=first,
                                  values=tuple(tuple(v) for _, _, v, *_ in rows))
        found = conn.execute(_row_query(check, relation)).fetchall()
        if not found:
            return DataViolations(check, keys)
        return DataViolations(check, keys, rows=int(found[0][1]), first=tuple((tuple(k),) for k, _ in found))
    except psycopg.Error as exc:
        return DataViolations(check, keys, failure=QueryFailure(server_message(exc, dsn),
                                                                getattr(exc, "sqlstate", None)))


__all__ = ["ENUM", "FIRST", "LENGTH", "NOT_NULL", "UNIQUE", "DataCheck", "DataViolations", "run_check"]

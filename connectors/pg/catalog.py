"""A service database's catalog as splitter needs it: the declared columns of each route's target table.

Owns: the one catalog read of target columns, shared by the apply session, the initial copy, plan
and verify.  Must not: write anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from splitter.core.errors import ConfigurationError
from splitter.topology.expressions import default_value, uses_default
from splitter.topology.model import Route
from splitter.topology.sqlrender import TargetColumn


@dataclass(frozen=True)
class DeclaredColumn:
    """A target column as the service database's catalog declares it."""

    name: str
    user_defined: bool  # enums and other types of the service's own (no assignment cast from text)
    type_name: str  # with its modifier, e.g. character varying(150)
    base_type: str  # without it, e.g. users.user_status
    default: str | None = None  # what DEFAULT in its expression stands for; None: the expression has none


def declared_columns(conn: psycopg.Connection, route: Route) -> list[DeclaredColumn]:
    """The route's target columns (in topology order) from the catalog; names the missing table or column."""
    rows = conn.execute(
        """SELECT a.attname, a.atttypid >= 16384, format_type(a.atttypid, a.atttypmod), format_type(a.atttypid, NULL),
                  CASE WHEN a.attgenerated = '' THEN pg_get_expr(d.adbin, d.adrelid) END,
                  CASE WHEN a.attidentity <> '' THEN 'identity' WHEN a.attgenerated <> '' THEN 'generated' ELSE '' END
             FROM pg_attribute a
             JOIN pg_class c ON c.oid = a.attrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped""",
        (route.target_schema, route.target_table),
    ).fetchall()
    if not rows:
        raise ConfigurationError(
            f"{route.table.origin}: target table {route.target_schema}.{route.target_table} does not exist in "
            f"database {route.service.database} (service {route.service.name})")
    declared = {r[0]: r for r in rows}
    out = []
    for name, expr in route.table.columns.items():
        if name not in declared:
            raise ConfigurationError(
                f"{route.table.origin}: column {name!r} of {route.target_schema}.{route.target_table} does not exist "
                f"in database {route.service.database} (service {route.service.name})")
        _, user_defined, type_name, base_type, default, filled_by = declared[name]
        meaning = None
        if uses_default(expr):
            try:
                meaning = default_value(default, filled_by=filled_by)
            except ConfigurationError as exc:
                raise ConfigurationError(
                    f"{route.table.origin}: {route.describe()}.{name}: expression {expr!r} says DEFAULT, but {exc}"
                ) from exc
        out.append(DeclaredColumn(name, bool(user_defined), type_name, base_type, meaning))
    return out


def target_columns(conn: psycopg.Connection, route: Route) -> list[TargetColumn]:
    """The route's target columns as apply needs them: an explicit cast only for user-defined types."""
    return [TargetColumn(c.name, c.base_type if c.user_defined else None, c.default)
            for c in declared_columns(conn, route)]

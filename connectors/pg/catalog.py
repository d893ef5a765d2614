"""A service database's catalog as splitter needs it: the declared columns of each route's target table.

Owns: the one catalog read of target columns, shared by the apply session, the initial copy, plan
and verify.  Must not: write anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from splitter.core.errors import ConfigurationError
from splitter.topology.model import Route
from splitter.topology.sqlrender import TargetColumn


@dataclass(frozen=True)
class DeclaredColumn:
    """A target column as the service database's catalog declares it."""

    name: str
    user_defined: bool  # enums and other types of the service's own (no assignment cast from text)
    type_name: str  # with its modifier, e.g. character varying(150)
    base_type: str  # without it, e.g. users.user_status


def declared_columns(conn: psycopg.Connection, route: Route) -> list[DeclaredColumn]:
    """The route's target columns (in topology order) from the catalog; names the missing table or column."""
    rows = conn.execute(
        """SELECT a.attname, a.atttypid >= 16384, format_type(a.atttypid, a.atttypmod), format_type(a.atttypid, NULL)
             FROM pg_attribute a
             JOIN pg_class c ON c.oid = a.attrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped""",
        (route.target_schema, route.target_table),
    ).fetchall()
    if not rows:
        raise ConfigurationError(
            f"{route.table.origin}: target table {route.target_schema}.{route.target_table} does not exist in "
            f"database {route.service.database} (service {route.service.name})")
    declared = {r[0]: DeclaredColumn(r[0], bool(r[1]), r[2], r[3]) for r in rows}
    out = []
    for name in route.table.columns:
        if name not in declared:
            raise ConfigurationError(
                f"{route.table.origin}: column {name!r} of {route.target_schema}.{route.target_table} does not exist "
                f"in database {route.service.database} (service {route.service.name})")
        out.append(declared[name])
    return out


def target_columns(conn: psycopg.Connection, route: Route) -> list[TargetColumn]:
    """The route's target columns as apply needs them: an explicit cast only for user-defined types."""
    return [TargetColumn(c.name, c.base_type if c.user_defined else None) for c in declared_columns(conn, route)]

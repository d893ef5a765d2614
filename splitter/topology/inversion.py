"""Inverting a service's routes: which target columns can be written back into which source columns.

Owns: the expression analysis of the reverse stream (`inverse_source_column`), the inverse of a route
(`invert_route`) and of a service (`invert_service`: a Topology whose one service writes the original
source tables from the service's tables), the exact copies a cutover moves sequences for, and the pure
half of the reversibility preflight (routes that share a source table; source columns the reverse
route cannot fill, given what the catalog says about them).
Must not: connect to a database (the catalog facts are handed in as `SourceColumn`s), or know the
reverse stream's names or Settings (`splitter.pipeline.reverse` does).

Inversion (what can be copied back): a target column whose expression is a plain source column `c`, or
`coalesce(c, <constants>)`, is written back into `c` (for coalesce a source NULL comes back as the
default the target holds; the forward projection of it is unchanged, so verify still matches).  Source
columns no target column maps back to are left out of the reverse route: an update keeps their values and
an insert takes their defaults.  Anything else (date_trunc, casts, arithmetic, constants) is not carried
back; see docs/cutover.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pglast import ast

from splitter.core.errors import ConfigurationError
from splitter.topology.expressions import parse_expression
from splitter.topology.model import Route, Service, Table, Topology


@dataclass(frozen=True)
class SourceColumn:
    """What the catalog says about one column of a table the reverse stream writes."""

    name: str
    not_null: bool
    has_default: bool
    identity: str  # '' (none), 'a' (GENERATED ALWAYS), 'd' (BY DEFAULT)
    generated: str  # '' (none), 's' (stored)
    in_primary_key: bool


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def inverse_source_column(expr: str) -> tuple[str, bool] | None:
    """The source column a target column's expression can be written back into, and whether exactly.

    `c` → (c, True); `coalesce(c, constants...)` → (c, False); anything else → None.
    """
    node = parse_expression(expr)
    exact = True
    if isinstance(node, ast.CoalesceExpr):
        args = node.args or ()
        if len(args) < 2 or not all(isinstance(a, ast.A_Const | ast.TypeCast) for a in args[1:]):
            return None
        node, exact = args[0], False
    if isinstance(node, ast.ColumnRef):
        fields = node.fields or ()
        if len(fields) == 1 and isinstance(fields[0], ast.String) and fields[0].sval:
            return fields[0].sval, exact
    return None


def exact_copies(route: Route) -> dict[str, str]:
    """target column → the source column it copies exactly, for `route`'s columns that do."""
    copies = {}
    for target_column, expr in route.table.columns.items():
        found = inverse_source_column(expr)
        if found is not None and found[1]:
            copies[target_column] = found[0]
    return copies


def invert_route(route: Route) -> Table:
    """The reverse table: fills `route`'s source table from its target table (see the module docstring)."""
    columns: dict[str, str] = {}
    exact_for: dict[str, bool] = {}
    for target_column, expr in route.table.columns.items():
        found = inverse_source_column(expr)
        if found is None:
            continue
        source_column, exact = found
        # Several target columns may read one source column: prefer the one that copies it exactly.
        if source_column not in columns or (exact and not exact_for[source_column]):
            columns[source_column] = _quote(target_column)
            exact_for[source_column] = exact
    key: list[str] = []
    for target_key in route.table.key:
        found = inverse_source_column(route.table.columns[target_key])
        if found is None or not found[1]:
            raise ConfigurationError(
                f"{route.table.origin}: {route.describe()}: key column {target_key!r} is computed "
                f"({route.table.columns[target_key]!r}), so rows written in the service cannot be matched to "
                f"source rows; this service cannot be cut over with a reverse stream")
        key.append(found[0])
    return Table(
        name=f"{route.source_schema}.{route.source_table}",
        source=f"{route.target_schema}.{route.target_table}",
        key=tuple(key),
        columns=columns,
    )


def invert_service(forward: Topology, service: str, reverse_service: str) -> Topology:
    """A topology whose one service, `reverse_service`, writes `service`'s source tables from its database."""
    svc = forward.service(service)
    tables = tuple(invert_route(r) for r in forward.routes_for(svc))
    topology = Topology(
        source_database=svc.database,
        services=(Service(reverse_service, database=forward.source_database, schema=forward.source_schema,
                          tables=tables),),
        source_schema=svc.schema,
    )
    topology.validate()
    return topology


def sharing_problems(forward: Topology, service: str) -> list[str]:
    """Why `service`'s routes cannot be written back on their own: source tables two routes share."""
    problems: list[str] = []
    seen: dict[tuple[str, str], Route] = {}
    for route in forward.routes_for(forward.service(service)):
        table = (route.source_schema, route.source_table)
        if table in seen:
            problems.append(f"{route.describe()} and {seen[table].describe()} both come from "
                            f"{'.'.join(table)}: two routes cannot both be written back into one table")
        seen[table] = route
        others = sorted({r.service.name for r in forward.routes()
                         if (r.source_schema, r.source_table) == table and r.service.name != service})
        if others:
            problems.append(f"source table {'.'.join(table)} is also taken by service(s) {', '.join(others)}: "
                            f"fencing it would stop their writes too (cut over services that share a table "
                            f"together is not supported)")
    return problems


def column_problems(rtable: Table, columns: Sequence[SourceColumn]) -> list[str]:
    """Why the reverse table `rtable` cannot fill its source table, whose catalog columns are `columns`."""
    if not columns:
        return [f"source table {rtable.name} does not exist"]
    problems: list[str] = []
    pk = {c.name for c in columns if c.in_primary_key}
    if set(rtable.key) != pk:
        problems.append(f"{rtable.name}: the service's key maps back to ({', '.join(rtable.key)}) but the source "
                        f"primary key is ({', '.join(sorted(pk))})")
    for c in columns:
        if c.name in rtable.columns:
            if c.generated:
                problems.append(f"{rtable.name}.{c.name} is a generated column: it cannot be written back")
            elif c.identity == "a":
                problems.append(f"{rtable.name}.{c.name} is GENERATED ALWAYS AS IDENTITY: rows written in "
                                f"the service cannot be copied back with their ids")
        elif c.not_null and not c.has_default and not c.identity and not c.generated:
            problems.append(f"{rtable.name}.{c.name} is NOT NULL without a default and no column of "
                            f"{rtable.source} maps back to it: rows inserted in the service could not be "
                            f"copied back")
    return problems


__all__ = [
    "SourceColumn",
    "column_problems",
    "exact_copies",
    "inverse_source_column",
    "invert_route",
    "invert_service",
    "sharing_problems",
]

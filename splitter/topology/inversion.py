"""Inverting a service's routes: which target columns are written back into which source columns, by ownership.

Owns: the inverse of a route (`invert_route`) and of a service (`invert_service`: a Topology whose one
service writes the original source tables from the service's tables), narrowed to what the service owns
(`splitter.topology.ownership`), the exact copies a cutover moves sequences for, and the pure half of the
reversibility preflight (what the reverse table cannot fill or write, given what the catalog says about
the source columns).  `inverse_source_column` (the expression analysis) is `splitter.topology.writeback`'s,
re-exported here.
Must not: connect to a database (the catalog facts are handed in as `SourceColumn`s), or know the
reverse stream's names or Settings (`splitter.pipeline.reverse` does).

Inversion (what can be copied back): a target column whose expression is a plain source column `c`, or
`coalesce(c, <constants>)`, can be written back into `c`; anything else (date_trunc, casts, arithmetic,
constants) is not carried back; see docs/cutover.md.  Ownership narrows it: the reverse table of service S
updates only S's owned source columns (and matches rows by the key).  If S owns the rows, its inserts
also fill every other source column S can invert and each reverse default (`Ownership.reverse_defaults`,
constants), both insert-only (`WriteScope.frozen`), and its deletes apply; source columns nothing fills
take their defaults.  If S does not own the rows, the reverse table only updates existing rows
(`WriteScope.rows=False`).  A source table S owns nothing of gets no reverse table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from splitter.core.errors import ConfigurationError
from splitter.topology.model import Route, Service, Table, Topology, WriteScope
from splitter.topology.ownership import route_owners
from splitter.topology.writeback import inverse_source_column


@dataclass(frozen=True)
class SourceColumn:
    """What the catalog says about one column of a table the reverse stream writes."""

    name: str
    not_null: bool
    has_default: bool
    identity: str  # '' (none), 'a' (GENERATED ALWAYS), 'd' (BY DEFAULT)
    generated: str  # '' (none), 's' (stored)
    in_primary_key: bool


@dataclass(frozen=True)
class ReverseProblem:
    """Why a reverse table cannot fill or write its source table: a code `splitter plan` reports it under,
    the source column it is about (None: the table), and the message."""

    code: str
    column: str | None
    message: str


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def exact_copies(route: Route) -> dict[str, str]:
    """target column → the source column it copies exactly, for `route`'s columns that do."""
    copies = {}
    for target_column, expr in route.table.columns.items():
        found = inverse_source_column(expr)
        if found is not None and found[1]:
            copies[target_column] = found[0]
    return copies


def _written_back(route: Route) -> dict[str, str]:
    """source column → the quoted target column it can be written back from (the exact copy, if several)."""
    columns: dict[str, str] = {}
    exact_for: dict[str, bool] = {}
    for target_column, expr in route.table.columns.items():
        found = inverse_source_column(expr)
        if found is None:
            continue
        source_column, exact = found
        if source_column not in columns or (exact and not exact_for[source_column]):
            columns[source_column] = _quote(target_column)
            exact_for[source_column] = exact
    return columns


def _reverse_key(route: Route) -> tuple[str, ...]:
    key: list[str] = []
    for target_key in route.table.key:
        found = inverse_source_column(route.table.columns[target_key])
        if found is None or not found[1]:
            raise ConfigurationError(
                f"{route.table.origin}: {route.describe()}: key column {target_key!r} is computed "
                f"({route.table.columns[target_key]!r}), so rows written in the service cannot be matched to "
                f"source rows; this service cannot be cut over with a reverse stream")
        key.append(found[0])
    return tuple(key)


def invert_route(route: Route, topology: Topology) -> Table | None:
    """The reverse table of `route` (a route of `topology`): fills its source table from its target table with
    what the service owns (see the module docstring); None when the service owns nothing of the table."""
    owners = route_owners(topology, route)
    owns_rows = owners.row_owner == route.service.name
    owned = owners.owned_by(route.service.name)
    if not owns_rows and not owned:
        return None
    key = _reverse_key(route)
    columns: dict[str, str] = {}
    frozen: set[str] = set()
    for source_column, target in _written_back(route).items():
        if source_column in key or source_column in owned:
            columns[source_column] = target
        elif owns_rows:  # another service's column: an insert fills it, its owner updates it
            columns[source_column] = target
            frozen.add(source_column)
    if owns_rows:
        for source_column, constant in owners.reverse_defaults.items():
            if source_column not in columns:
                columns[source_column] = constant
                frozen.add(source_column)
    return Table(
        name=f"{route.source_schema}.{route.source_table}",
        source=f"{route.target_schema}.{route.target_table}",
        key=key,
        columns=columns,
        scope=WriteScope(frozen=frozenset(frozen), rows=owns_rows),
    )


def invert_service(forward: Topology, service: str, reverse_service: str) -> Topology:
    """A topology whose one service, `reverse_service`, writes back what `service` owns of its source tables
    from its database (no table for a source table it owns nothing of)."""
    svc = forward.service(service)
    tables = tuple(t for r in forward.routes_for(svc) if (t := invert_route(r, forward)) is not None)
    topology = Topology(
        source_database=svc.database,
        services=(Service(reverse_service, database=forward.source_database, schema=forward.source_schema,
                          tables=tables),),
        source_schema=svc.schema,
    )
    topology.validate()
    return topology


def reverse_problems(rtable: Table, columns: Sequence[SourceColumn]) -> list[ReverseProblem]:
    """Why the reverse table `rtable` cannot fill or write its source table, whose catalog columns are `columns`.

    Every table: the key must be the source primary key; no generated or GENERATED ALWAYS column may be
    written back.  A row owner's table (`rtable.scope.rows`) inserts, so every NOT NULL source column
    without a default must be filled: mapped back or given a reverse default.
    """
    if not columns:
        return [ReverseProblem("source-table-missing", None, f"source table {rtable.name} does not exist")]
    problems: list[ReverseProblem] = []
    pk = {c.name for c in columns if c.in_primary_key}
    if set(rtable.key) != pk:
        problems.append(ReverseProblem(
            "reverse-key-mismatch", None, f"{rtable.name}: the service's key maps back to ({', '.join(rtable.key)}) "
                                          f"but the source primary key is ({', '.join(sorted(pk))})"))
    for c in columns:
        if c.name in rtable.columns:
            if c.generated:
                problems.append(ReverseProblem("reverse-generated", c.name, f"{rtable.name}.{c.name} is a generated "
                                                                            f"column: it cannot be written back"))
            elif c.identity == "a":
                problems.append(ReverseProblem(
                    "reverse-identity-always", c.name, f"{rtable.name}.{c.name} is GENERATED ALWAYS AS IDENTITY: "
                                                       f"rows written in the service cannot be copied back with "
                                                       f"their ids"))
        elif rtable.scope.rows and c.not_null and not c.has_default and not c.identity and not c.generated:
            problems.append(ReverseProblem(
                "reverse-insert-incomplete", c.name,
                f"{rtable.name}.{c.name} is NOT NULL without a default, and the service owning the rows has "
                f"neither a column of {rtable.source} written back to it (computed expressions are not) nor a "
                f"reverse default for it (Ownership.reverse_defaults): rows inserted in the service could not "
                f"be copied back"))
    return problems


def column_problems(rtable: Table, columns: Sequence[SourceColumn]) -> list[str]:
    """`reverse_problems`' messages: what the cutover preflight refuses."""
    return [p.message for p in reverse_problems(rtable, columns)]


__all__ = [
    "ReverseProblem",
    "SourceColumn",
    "column_problems",
    "exact_copies",
    "inverse_source_column",
    "invert_route",
    "invert_service",
    "reverse_problems",
]

"""Who owns what in the source once services move: rows and columns of every source table, and what follows.

Owns: resolving the topology's `Ownership` declarations (and the implicit ownership of a table only one
service takes) into `TableOwners`; which target columns of a route its service owns; the `WriteScope` a
stream may write into a target table (the forward stream of a service whose writes have moved, the
reverse stream of a service that owns only part of a table); the checks on declarations that need no
database; and the order of cutovers `splitter plan` recommends.
Must not: connect to a database (catalog checks, such as whether the row owner's reverse inserts fill
every NOT NULL source column, live in `splitter.topology.inversion` over handed-in catalog facts and in
`splitter.ops.plan`), render SQL, or know cutover states (callers pass what has moved).

The model: bento_social stays the hub until the end.  When service S is cut over, the writes of what S
owns (its columns; inserts and deletes if it owns the rows) move to S's database, and S's reverse stream
writes exactly those back to the source; everything S reads and does not own stays a read copy, fed
forward from the source, so the forward stream into S's database then writes only what S does not own.
A table is retired when every service owning part of it has completed its cutover: then the streams
that table feeds stop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from splitter.core.errors import ConfigurationError
from splitter.topology.expressions import expression_columns, split_qualified
from splitter.topology.model import FULL, Ownership, Route, Topology, WriteScope
from splitter.topology.writeback import inverse_source_column

Table = tuple[str, str]  # (schema, table) of a source table


@dataclass(frozen=True)
class TableOwners:
    """The resolved ownership of one source table."""

    table: Table
    services: tuple[str, ...]  # every service that takes it, in declaration order
    row_owner: str
    column_owner: Mapping[str, str]  # source column -> the service owning it (every column some route reads)
    reverse_defaults: Mapping[str, str]
    declared: Ownership | None

    @property
    def shared(self) -> bool:
        return len(self.services) > 1

    @property
    def owners(self) -> tuple[str, ...]:
        """The services owning any part of the table (rows or a column), in declaration order."""
        owning = {self.row_owner, *self.column_owner.values()}
        return tuple(s for s in self.services if s in owning)

    def owned_by(self, service: str) -> frozenset[str]:
        return frozenset(c for c, owner in self.column_owner.items() if owner == service)

    @property
    def name(self) -> str:
        return ".".join(self.table)


def _routes_by_table(topology: Topology) -> dict[Table, list[Route]]:
    out: dict[Table, list[Route]] = {}
    for route in topology.routes():
        out.setdefault((route.source_schema, route.source_table), []).append(route)
    return out


def _declared(topology: Topology) -> dict[Table, Ownership]:
    out: dict[Table, Ownership] = {}
    for decl in topology.shared:
        out.setdefault(split_qualified(decl.table, topology.source_schema), decl)
    return out


def _resolve(topology: Topology, table: Table, routes: Sequence[Route], decl: Ownership | None) -> TableOwners:
    services = tuple(dict.fromkeys(r.service.name for r in routes))
    read: set[str] = set()
    keys: set[str] = set()
    for r in routes:
        read |= r.table.source_columns_read()
        keys |= r.table.key_source_columns()
    if decl is None:
        owner = services[0]
        return TableOwners(table, services, owner, {c: owner for c in sorted(read)}, {}, None)
    column_owner: dict[str, str] = {c: decl.rows for c in sorted(keys)}
    for service, columns in decl.columns.items():
        for c in columns:
            column_owner.setdefault(c, service)
    return TableOwners(table, services, decl.rows, column_owner, dict(decl.reverse_defaults), decl)


def table_owners(topology: Topology, schema: str, table: str) -> TableOwners | None:
    """The ownership of source table schema.table, or None when no service takes it."""
    routes = _routes_by_table(topology).get((schema, table))
    if not routes:
        return None
    return _resolve(topology, (schema, table), routes, _declared(topology).get((schema, table)))


def all_owners(topology: Topology) -> list[TableOwners]:
    """Every source table some service takes, with its ownership, in first-declared order."""
    declared = _declared(topology)
    return [_resolve(topology, t, routes, declared.get(t)) for t, routes in _routes_by_table(topology).items()]


def route_owners(topology: Topology, route: Route) -> TableOwners:
    found = table_owners(topology, route.source_schema, route.source_table)
    assert found is not None  # the route takes it
    return found


def owned_target_columns(topology: Topology, route: Route) -> frozenset[str]:
    """The target columns of `route` its service owns: those reading only source columns it owns, and
    target-only columns (constants, which only the service itself changes once it has moved)."""
    owned = route_owners(topology, route).owned_by(route.service.name)
    return frozenset(t for t, expr in route.table.columns.items() if expression_columns(expr) <= owned)


def owns_rows(topology: Topology, route: Route) -> bool:
    return route_owners(topology, route).row_owner == route.service.name


def moved_scope(topology: Topology, route: Route) -> WriteScope:
    """What the forward stream still writes into `route`'s target once its service's writes have moved:
    never what the service owns; rows only if another service owns them (it creates and deletes them)."""
    return WriteScope(frozen=owned_target_columns(topology, route), rows=not owns_rows(topology, route))


def owns_everything(topology: Topology, route: Route) -> bool:
    """Whether the service owns every column and the rows of `route` (nothing of it is a read copy)."""
    return owns_rows(topology, route) and owned_target_columns(topology, route) == frozenset(route.table.columns)


def read_copy_columns(topology: Topology, route: Route) -> frozenset[str]:
    """The target columns of `route` another service owns (read-only in the service's database after its move)."""
    return frozenset(route.table.columns) - owned_target_columns(topology, route)


def read_copies(topology: Topology, owners: TableOwners) -> dict[str, frozenset[str]]:
    """service → the source columns of `owners.table` it reads and does not own (its read copy), keys left
    out; every service reading something it does not own, or rows it does not own, in declaration order."""
    out: dict[str, frozenset[str]] = {}
    for route in _routes_by_table(topology).get(owners.table, ()):
        service = route.service.name
        foreign = (route.table.source_columns_read() - route.table.key_source_columns()
                   - owners.owned_by(service))
        if foreign or service != owners.row_owner:
            out[service] = out.get(service, frozenset()) | foreign
    return out


def shares_data(topology: Topology, service: str) -> bool:
    """Whether some table of `service` has a part another service owns (a cutover of it then hands over)."""
    return any(not owns_everything(topology, r) for r in topology.routes_for(topology.service(service)))


def owning_tables(topology: Topology, service: str) -> list[TableOwners]:
    """The source tables `service` owns any part of."""
    return [t for t in all_owners(topology) if service in t.owners]


def retired_tables(topology: Topology, complete: Iterable[str]) -> list[TableOwners]:
    """The source tables whose every owner has completed its cutover: no stream feeds them any more."""
    done = set(complete)
    return [t for t in all_owners(topology) if set(t.owners) <= done]


def retired_services(topology: Topology, complete: Iterable[str]) -> set[str]:
    """The services every table of which is retired: their forward worker has nothing left to apply."""
    retired = {t.table for t in retired_tables(topology, complete)}
    return {s.name for s in topology.services
            if all((r.source_schema, r.source_table) in retired for r in topology.routes_for(s))}


def reverse_still_needed(topology: Topology, service: str, complete: Iterable[str]) -> bool:
    """Whether a completed `service` must keep its reverse stream: it owns part of a table not yet retired,
    whose read copies in other services' databases are fed from the source."""
    retired = {t.table for t in retired_tables(topology, complete)}
    return any(t.table not in retired for t in owning_tables(topology, service))


def target_only_columns(route: Route) -> frozenset[str]:
    """Target columns that read no source column (constants): once the service has moved, they are its own
    data, which the source cannot hold, so they are never compared with the source again."""
    return frozenset(t for t, expr in route.table.columns.items() if not expression_columns(expr))


def _narrowed(topology: Topology, services: Iterable[str], keep: Callable[[Route], frozenset[str] | None]) -> Topology:
    """`topology` with each table of `services` narrowed to `keep(route)` and its key (None: left out)."""
    chosen = set(services)
    narrowed = []
    for service in topology.services:
        if service.name not in chosen:
            narrowed.append(service)
            continue
        tables = []
        for route in topology.routes_for(service):
            columns = keep(route)
            if columns is None:
                continue
            columns |= set(route.table.key)
            tables.append(replace(route.table, columns={c: e for c, e in route.table.columns.items() if c in columns}))
        narrowed.append(replace(service, tables=tuple(tables)))
    return replace(topology, services=tuple(narrowed))


def owned_view(topology: Topology, services: Iterable[str]) -> Topology:
    """`topology` with the tables of `services` narrowed to the source columns each owns (and its key): what a
    cutover's final verify compares, since the read copies in those tables go on streaming meanwhile.
    Tables a service owns nothing of (read copies only) are left out, and so are target-only columns."""
    def keep(route: Route) -> frozenset[str] | None:
        owned = owned_target_columns(topology, route) - target_only_columns(route)
        if not owns_rows(topology, route) and owned <= set(route.table.key):
            return None  # a read copy only: it goes on streaming, there is nothing of the service's to compare
        return owned

    return _narrowed(topology, services, keep)


def moved_view(topology: Topology, moved: Iterable[str]) -> Topology:
    """`topology` without the target-only columns of the services whose writes have moved: what `splitter
    verify` compares (the service may have changed them, and the source never had them)."""
    return _narrowed(topology, moved, lambda route: frozenset(route.table.columns) - target_only_columns(route))


def recommended_order(topology: Topology) -> list[str]:
    """The order `splitter plan` recommends cutting services over in, one at a time.

    Services that share nothing first (each is independent), in declaration order; then the services of
    shared tables, row owners before the services that only own columns of tables whose rows others own,
    so a service's read copies of rows are fed by an owner that has already moved as seldom as possible.
    """
    names = [s.name for s in topology.services]
    alone = [n for n in names if not any(t.shared for t in _tables_of(topology, n))]
    row_owners = [n for n in names if n not in alone and any(t.row_owner == n for t in all_owners(topology)
                                                              if t.shared)]
    rest = [n for n in names if n not in alone and n not in row_owners]
    return alone + row_owners + rest


def _tables_of(topology: Topology, service: str) -> list[TableOwners]:
    return [t for t in all_owners(topology) if service in t.services]


def ownership_problems(topology: Topology) -> list[str]:
    """Problems with the ownership declarations that need no database, each naming file and line."""
    problems: list[str] = []
    by_table = _routes_by_table(topology)
    names = {s.name for s in topology.services}
    seen: dict[Table, Ownership] = {}
    for decl in topology.shared:
        where = f"{decl.origin}: ownership of {decl.table}"
        try:
            table = split_qualified(decl.table, topology.source_schema)
        except ConfigurationError as exc:
            problems.append(f"{where}: {exc}")
            continue
        if table in seen:
            problems.append(f"{where}: declared twice (first at {seen[table].origin})")
            continue
        seen[table] = decl
        routes = by_table.get(table)
        if not routes:
            problems.append(f"{where}: no service takes source table {'.'.join(table)}")
            continue
        problems += _declaration_problems(where, decl, routes, names)
    for table, routes in by_table.items():
        services = sorted({r.service.name for r in routes})
        owner = seen[table].rows if table in seen else services[0] if len(services) == 1 else None
        for r in routes:
            if r.table.where is not None and r.service.name == owner:
                problems.append(
                    f"{r.table.origin}: {r.describe()} has a row filter ({r.table.where!r}) but owns the rows of "
                    f"{'.'.join(table)}: after its cutover a TRUNCATE in its database would come back as a "
                    f"DELETE of every source row, also of those outside its filter; a filtered route can only "
                    f"be a read copy: give the rows to a service that takes them all (Ownership(rows=...))")
        if len(services) > 1 and table not in seen:
            problems.append(f"{topology.origin}: source table {'.'.join(table)} is taken by services "
                            f"{', '.join(services)} but no Ownership in `shared` says who owns its rows and "
                            f"columns after their cutovers")
        for service in services:
            mine = [r for r in routes if r.service.name == service]
            if len(mine) > 1:
                problems.append(f"{mine[1].table.origin}: {mine[1].describe()} and {mine[0].describe()} both "
                                f"come from {'.'.join(table)}: two routes of one service cannot both be written "
                                f"back into one table")
    return problems


def _declaration_problems(where: str, decl: Ownership, routes: Sequence[Route], names: set[str]) -> list[str]:
    problems: list[str] = []
    takers = {r.service.name: r for r in routes}
    for service in [decl.rows, *decl.columns]:
        if service not in names:
            problems.append(f"{where}: unknown service {service!r} (the topology has: {', '.join(sorted(names))})")
        elif service not in takers:
            problems.append(f"{where}: service {service!r} does not take this table, so it cannot own part of it")
    if problems:
        return problems
    keys: set[str] = set()
    read: dict[str, list[str]] = {}
    for r in routes:
        keys |= r.table.key_source_columns()
        for c in r.table.source_columns_read():
            read.setdefault(c, []).append(r.service.name)
    owners: dict[str, list[str]] = {}
    for service, columns in decl.columns.items():
        for c in columns:
            owners.setdefault(c, []).append(service)
    for c, who in sorted(owners.items()):
        if c in keys and who != [decl.rows]:
            problems.append(f"{where}: column {c!r} is part of the key, which belongs to the row owner "
                            f"{decl.rows!r}, but is declared for {', '.join(who)}")
        elif len(who) > 1:
            problems.append(f"{where}: column {c!r} has two owners ({', '.join(who)}); give it to one")
        elif c not in read:
            problems.append(f"{where}: column {c!r} is owned by {who[0]!r} but no service reads it")
    for c, readers in sorted(read.items()):
        if c not in owners and c not in keys:
            problems.append(f"{where}: column {c!r} (read by {', '.join(sorted(set(readers)))}) has no owner; "
                            f"name the service that writes it after its cutover")
    for service, columns in decl.columns.items():
        route = takers[service]
        written_back = {found[0] for expr in route.table.columns.values()
                        if (found := inverse_source_column(expr)) is not None}
        for c in columns:
            if c not in read or c in written_back:
                continue
            how = ("reads it only through a computed expression" if c in route.table.source_columns_read()
                   else "does not read it")
            problems.append(f"{where}: column {c!r} is owned by {service!r}, whose table {route.table.name} "
                            f"{how}, so its writes could not reach the source; map it plainly or give it to "
                            f"another service")
    for route in routes:
        owned = set(decl.columns.get(route.service.name, ())) | (keys if route.service.name == decl.rows else set())
        for target, expr in route.table.columns.items():
            reads = expression_columns(expr)
            if reads & owned and reads - owned:
                problems.append(f"{route.table.origin}: {route.service.name}.{route.table.name}.{target} reads "
                                f"columns owned by {route.service.name!r} ({', '.join(sorted(reads & owned))}) "
                                f"and by others ({', '.join(sorted(reads - owned))}): it could be neither written "
                                f"by the service nor fed as a read copy")
    for c, expr in decl.reverse_defaults.items():
        try:
            if expression_columns(expr):
                problems.append(f"{where}: reverse default of {c!r} ({expr!r}) reads columns; it must be a "
                                f"constant")
        except ConfigurationError as exc:
            problems.append(f"{where}: reverse default of {c!r}: {exc}")
    return problems


__all__ = [
    "FULL",
    "TableOwners",
    "WriteScope",
    "all_owners",
    "moved_scope",
    "moved_view",
    "owned_target_columns",
    "owned_view",
    "ownership_problems",
    "owning_tables",
    "owns_everything",
    "owns_rows",
    "read_copies",
    "read_copy_columns",
    "recommended_order",
    "retired_services",
    "retired_tables",
    "reverse_still_needed",
    "route_owners",
    "shares_data",
    "table_owners",
    "target_only_columns",
]

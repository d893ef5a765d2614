"""The topology model: which service takes which source table, keyed how, with which column expressions.

Owns: the declarative classes `topology.py` is written with, loading that file, which `on_error` a row
of a table gets (`effective_on_error`: the table's own, else its service's), and the checks that
need no database (expressions parse, names are unique, keys are projected, every expression refers to
columns by plain names).  Every problem is reported with the file and line of the declaration.
Must not: connect to a database (schema-aware checks live in `splitter.ops.plan`), render SQL
(`splitter.topology.sqlrender` does that from this model) or parse SQL itself (it asks
`splitter.topology.expressions`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace

from splitter.core.errors import ConfigurationError
from splitter.topology.expressions import expression_columns, only_default, split_qualified, uses_default


@dataclass(frozen=True)
class Origin:
    """Where in `topology.py` something was declared, for error messages."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


def _declaration_origin() -> Origin:
    """The first stack frame outside this module: the line of topology.py that declared the object."""
    frame = sys._getframe(1)
    here = __file__
    # Skip this module and the __init__ that dataclasses generates (its filename is "<string>").
    while frame is not None and frame.f_code.co_filename in (here, "<string>"):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return Origin("<unknown>", 0)
    return Origin(frame.f_code.co_filename, frame.f_lineno)


ON_ERROR_POLICIES = ("stop", "dead_letter")


def effective_on_error(service: Service, table: Table | None = None) -> str:
    """What happens to a row of `table` the service database refuses: the table's own `on_error` when it sets
    one, else `service`'s.  `table` None (what belongs to no table: a record that cannot be read): the service's."""
    if table is not None and table.on_error is not None:
        return table.on_error
    return service.on_error


def on_error_said(service: Service, table: Table | None, instead: str) -> tuple[str, str]:
    """For messages: where the `effective_on_error` of `table` is declared, and how to make it `instead`."""
    policy = effective_on_error(service, table)
    if table is None:
        return f"service {service.name} has on_error={policy!r}", f"set on_error={instead!r} on service {service.name}"
    if table.on_error is not None:
        return (f"table {table.name} of service {service.name} has on_error={policy!r}",
                f"set on_error={instead!r} on table {table.name}")
    return (f"service {service.name} has on_error={policy!r} and table {table.name} sets none of its own",
            f"set on_error={instead!r} on table {table.name} (Table(..., on_error={instead!r})) or on service "
            f"{service.name}")


@dataclass(frozen=True)
class WriteScope:
    """What a stream may write into one target table (see `splitter.topology.ownership`).

    `frozen`: target columns written when a row is inserted and never updated (another service owns
    them, or, for a reverse stream, only an insert fills them).  `rows`: whether inserts, deletes and
    truncates apply; when False only existing rows are updated, and an update that finds no row is left
    alone (the row's owner deleted it).
    """

    frozen: frozenset[str] = frozenset()
    rows: bool = True

    @property
    def full(self) -> bool:
        return self.rows and not self.frozen


FULL = WriteScope()


@dataclass(frozen=True)
class Table:
    """One target table of a service, filled from one source table.

    `columns` maps each target column to a SQL expression over the source row's columns (plain
    names).  `key` names the target columns that identify a row (a unique index in the target must
    cover exactly them); their expressions may read only the source primary key.  `on_error`: what happens
    to a row of this table the service database refuses, "stop" or "dead_letter" as the service's; None
    (the default) takes the service's (`effective_on_error`).
    """

    name: str
    source: str
    key: tuple[str, ...]
    columns: Mapping[str, str]
    # What the stream writes: everything (topology.py's tables); reverse tables built in code narrow it.
    scope: WriteScope = FULL
    on_error: str | None = None
    # A row filter: a SQL boolean over the source row (plain names); only rows for which it is true are in
    # the target, as with PostgreSQL's publication row filters (NULL counts as false).
    where: str | None = None
    origin: Origin = field(default_factory=_declaration_origin, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", tuple(self.key))
        object.__setattr__(self, "columns", dict(self.columns))

    def source_columns_read(self) -> frozenset[str]:
        """Every source column any of this table's expressions, or its row filter, reads."""
        out: set[str] = set(self.filter_columns())
        for expr in self.columns.values():
            out |= expression_columns(expr)
        return frozenset(out)

    def filter_columns(self) -> frozenset[str]:
        """The source columns the row filter reads (none without a filter)."""
        return expression_columns(self.where) if self.where is not None else frozenset()

    def key_source_columns(self) -> frozenset[str]:
        """The source columns the key expressions read (must be within the source primary key)."""
        out: set[str] = set()
        for k in self.key:
            out |= expression_columns(self.columns[k])
        return frozenset(out)


@dataclass(frozen=True)
class Service:
    """One service: its database, the schema its tables live in, and its tables."""

    name: str
    database: str
    tables: tuple[Table, ...]
    schema: str = "public"
    # What the worker does when the service database rejects a change: "stop" (and alert), or
    # "dead_letter" (isolate the rejected rows into splitter.dead_letters and go on); a table may set its own
    # (`Table.on_error`, `effective_on_error`).
    on_error: str = "stop"
    origin: Origin = field(default_factory=_declaration_origin, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tables", tuple(self.tables))

    def target(self, table: Table) -> tuple[str, str]:
        """The (schema, table) `table` is written to in this service's database."""
        return split_qualified(table.name, self.schema)


@dataclass(frozen=True)
class Route:
    """One source table feeding one target table of one service."""

    service: Service
    table: Table
    source_schema: str
    source_table: str

    @property
    def target_schema(self) -> str:
        return self.service.target(self.table)[0]

    @property
    def target_table(self) -> str:
        return self.service.target(self.table)[1]

    def describe(self) -> str:
        return (
            f"{self.source_schema}.{self.source_table} → "
            f"{self.service.name}.{self.target_schema}.{self.target_table}"
        )


@dataclass(frozen=True)
class Ownership:
    """Who owns a source table's data once services have moved: the rows, and each column.

    Required for every source table more than one service takes (`users` feeds auth and user).
    `rows` names the service that creates and deletes the table's rows once it is cut over; `columns`
    maps each service to the source columns it writes after its cutover (every column some service
    reads has exactly one owner; the key belongs to the row owner).  Everything a service reads and
    does not own is a read copy, fed forward from the source until the table is retired.
    `reverse_defaults` gives a constant SQL expression for a source column the row owner does not map
    back, used when its reverse stream inserts a row (a NOT NULL column without a default needs one).
    """

    table: str
    rows: str
    columns: Mapping[str, tuple[str, ...]]
    reverse_defaults: Mapping[str, str] = field(default_factory=dict)
    origin: Origin = field(default_factory=_declaration_origin, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", {k: tuple(v) for k, v in dict(self.columns).items()})
        object.__setattr__(self, "reverse_defaults", dict(self.reverse_defaults))


@dataclass(frozen=True)
class Topology:
    """The whole split: the source database, its services, who owns shared tables, and tables left behind."""

    source_database: str
    services: tuple[Service, ...]
    source_schema: str = "public"
    unrouted: tuple[str, ...] = ()
    shared: tuple[Ownership, ...] = ()
    origin: Origin = field(default_factory=_declaration_origin, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "services", tuple(self.services))
        object.__setattr__(self, "unrouted", tuple(self.unrouted))
        object.__setattr__(self, "shared", tuple(self.shared))

    def service(self, name: str) -> Service:
        for service in self.services:
            if service.name == name:
                return service
        known = ", ".join(s.name for s in self.services)
        raise ConfigurationError(f"unknown service {name!r} (the topology has: {known})")

    def subset(self, names: Iterable[str]) -> Topology:
        """This topology with only the services named (in declaration order), keeping the ownership
        declarations whose services are all kept (a table left to one service needs none)."""
        chosen = set(names)
        for name in chosen:
            self.service(name)
        return replace(self, services=tuple(s for s in self.services if s.name in chosen),
                       shared=tuple(o for o in self.shared if {o.rows, *o.columns} <= chosen))

    def routes(self) -> Iterator[Route]:
        for service in self.services:
            for table in service.tables:
                schema, name = split_qualified(table.source, self.source_schema)
                yield Route(service, table, schema, name)

    def routes_for(self, service: Service) -> list[Route]:
        return [r for r in self.routes() if r.service.name == service.name]

    def source_tables(self) -> list[tuple[str, str]]:
        """Every source table some service takes, in first-declared order, without repeats."""
        seen: dict[tuple[str, str], None] = {}
        for route in self.routes():
            seen.setdefault((route.source_schema, route.source_table), None)
        return list(seen)

    def validate(self) -> None:
        """Checks of the declarations themselves (`splitter.topology.loading.validate` adds the ownership
        checks); raises ConfigurationError naming file and line of the problem."""
        problems = list(_problems(self))
        if problems:
            raise ConfigurationError("topology is invalid:\n  " + "\n  ".join(problems))


def _problems(topology: Topology) -> Iterable[str]:
    names: set[str] = set()
    databases: dict[str, str] = {}
    for service in topology.services:
        if service.name in names:
            yield f"{service.origin}: service {service.name!r} is declared twice"
        names.add(service.name)
        if service.database in databases:
            yield (
                f"{service.origin}: service {service.name!r} uses database {service.database!r}, "
                f"already used by service {databases[service.database]!r}"
            )
        databases[service.database] = service.name
        if service.on_error not in ON_ERROR_POLICIES:
            yield (f"{service.origin}: service {service.name!r} has on_error={service.on_error!r}; "
                   f"choose one of {', '.join(ON_ERROR_POLICIES)}")
        targets: set[tuple[str, str]] = set()
        for table in service.tables:
            where = f"{table.origin}: {service.name}.{table.name}"
            if table.on_error is not None and table.on_error not in ON_ERROR_POLICIES:
                yield (f"{where}: table {table.name!r} has on_error={table.on_error!r}; choose one of "
                       f"{', '.join(ON_ERROR_POLICIES)}, or leave it out to take the service's ({service.on_error!r})")
            try:
                target = service.target(table)
                split_qualified(table.source, topology.source_schema)
            except ConfigurationError as exc:
                yield f"{where}: {exc}"
                continue
            if target in targets:
                yield f"{where}: two routes write the same target table {'.'.join(target)}"
            targets.add(target)
            if not table.columns:
                yield f"{where}: declares no columns"
            if not table.key:
                yield f"{where}: declares no key"
            for k in table.key:
                if k not in table.columns:
                    yield f"{where}: key column {k!r} is not among its columns"
            if table.where is not None:
                yield from _filter_problems(where, table.where)
            for column, expr in table.columns.items():
                try:
                    expression_columns(expr)
                except ConfigurationError as exc:
                    yield f"{where}.{column}: {exc}"
                    continue
                if only_default(expr):
                    yield (f"{where}.{column}: expression {expr!r} is only DEFAULT: leave the column out of the "
                           "topology and the service database fills it with its default")


def _filter_problems(where: str, condition: str) -> Iterable[str]:
    try:
        expression_columns(condition)
    except ConfigurationError as exc:
        yield f"{where}: row filter (where=): {exc}"
        return
    if uses_default(condition):
        yield f"{where}: row filter (where=) {condition!r} says DEFAULT, which only a target column has"

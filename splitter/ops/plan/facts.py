"""The plan's vocabulary: what gathering found in each database, and the findings the rules make of it.

Owns: the facts the rules judge (`SourceFacts`, `TargetFacts`, what planning an expression said,
the slot's state, a database that could not be read), `Finding` with its severities, and
`target_name`, how every finding names a route's target table.  The
catalog descriptions inside them (tables, columns, types, roles, the publication) are the
dataclasses `connectors.pg.inspect` reads.
Must not: read any database or decide anything: these are values, built by `gather` (or by hand in
the unit tests) and judged by `rules`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from connectors.pg.inspect import PublicationFacts, SourceRole, TableFacts, TargetRole, TypeInfo
from splitter.core.envelope import RelationSchema
from splitter.topology.inversion import SourceColumn
from splitter.topology.model import Route

ERROR = "ERROR"
WARNING = "WARNING"
INFO = "INFO"
SEVERITY_RANK = {ERROR: 0, WARNING: 1, INFO: 2}


def target_name(route: Route) -> str:
    """`schema.table` of the route's target table."""
    return f"{route.target_schema}.{route.target_table}"


@dataclass(frozen=True)
class Finding:
    """One problem (or notable fact) the plan found."""

    severity: str
    code: str
    message: str
    service: str | None = None
    table: str | None = None
    column: str | None = None
    origin: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {"severity": self.severity, "code": self.code, "service": self.service, "table": self.table,
                "column": self.column, "message": self.message, "origin": self.origin}

    @property
    def where(self) -> str:
        """`service: schema.table.column`, as much of it as the finding has."""
        place = ".".join(p for p in (self.table, self.column) if p)
        if self.service:
            return f"{self.service}: {place}" if place else self.service
        return place


@dataclass(frozen=True)
class ExprCheck:
    """What planning one target column's expression in one database said."""

    result: TypeInfo | None = None
    error: str | None = None
    sqlstate: str | None = None


@dataclass(frozen=True)
class SlotFacts:
    exists: bool = False
    active: bool = False
    problem: str | None = None  # why an existing slot cannot be used


RouteColumn = tuple[str, str, str, str]  # (service, target schema, target table, target column)


@dataclass(frozen=True)
class SourceFacts:
    wal_level: str
    max_replication_slots: int
    replication_slots_used: int
    max_wal_senders: int
    wal_senders_used: int
    slot: SlotFacts
    role: SourceRole
    publication: PublicationFacts | None
    # Every ordinary table of the schemas looked at; columns and indexes only for the routed ones.
    tables: Mapping[tuple[str, str], TableFacts]
    # Routed tables as splitter reads them (built-in types as declared, user-defined ones as text).
    relations: Mapping[tuple[str, str], RelationSchema]
    results: Mapping[RouteColumn, ExprCheck]
    # Routed tables' columns as the cutover's reverse preflight reads them (what a reverse stream can write).
    writeback: Mapping[tuple[str, str], Sequence[SourceColumn]] = field(default_factory=dict)
    # Planning each route's row filter (`Table.where`), by (service, target schema, target table).
    filters: Mapping[tuple[str, str, str], ExprCheck] = field(default_factory=dict)


@dataclass(frozen=True)
class TargetFacts:
    role: TargetRole
    tables: Mapping[tuple[str, str], TableFacts]
    results: Mapping[RouteColumn, ExprCheck]


@dataclass(frozen=True)
class Unreachable:
    """A database the plan could not read: which, where (masked) and why, on one line."""

    what: str
    dsn: str  # masked
    message: str
    connected: bool = False  # True: connected, but reading the catalogs failed

    @property
    def code(self) -> str:
        return "inspection-failed" if self.connected else "connection-failed"

    def describe(self) -> str:
        action = "cannot inspect" if self.connected else "cannot connect to"
        return f"{action} {self.what} at {self.dsn}: {self.message}"


__all__ = [
    "ERROR",
    "INFO",
    "SEVERITY_RANK",
    "WARNING",
    "ExprCheck",
    "Finding",
    "RouteColumn",
    "SlotFacts",
    "SourceFacts",
    "TargetFacts",
    "Unreachable",
    "target_name",
]

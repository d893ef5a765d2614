"""`splitter plan`: the routing table and every problem found before any data moves.

Owns: reading what the source and each service database say about themselves (catalogs, settings,
privileges, and what each topology expression yields when PostgreSQL plans it), the rules that
turn those facts into findings (ERROR / WARNING / INFO, each naming service, table, column and the
topology line), and printing them for people or as JSON.

The module has two halves on purpose:
  * gathering (`gather_source`, `gather_target`) talks to the databases and returns plain
    dataclasses of facts; it decides nothing;
  * `collect_findings` is pure: facts in, findings out, so every rule is unit-tested on facts
    written by hand, and the integration tests check that gathering reads real servers right.

Expressions are not judged by parsing alone: each route's projection (the exact SQL backfill runs)
is planned in the source with LIMIT 0, which resolves every function and operator and reports the
result type of each column; and each column is planned again in its service database as
`EXPLAIN INSERT INTO <target> (<column>) SELECT <expression> ...` over a row of the source's
types, the way the worker's apply runs it, which is PostgreSQL's own verdict on whether the
assignment to the target type exists.  EXPLAIN without ANALYZE executes nothing.

Must not: write anything to any database (no publication, slot, schema or row is created; a
plan only reads), talk to Kafka, or print a DSN unmasked.  The plan's rules describe what
`run` will do; they do not change it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TextIO, TypeVar

import psycopg
from pglast import ast
from psycopg import sql

from connectors.pg.catalog import target_columns
from connectors.pg.client import connect
from connectors.pg.source import check_slot_usable, relation_schema, slot_info
from connectors.pg.state import STATE_SCHEMA
from splitter.core.dsn import mask_dsn, mask_secrets
from splitter.core.envelope import ColumnSchema, RelationSchema
from splitter.core.errors import ConfigurationError, FatalError, SplitterError
from splitter.pipeline.config import Settings
from splitter.topology.model import Route, Topology, expression_columns, parse_expression, split_qualified
from splitter.topology.sqlrender import (
    TargetColumn,
    check_route_against,
    checked_type,
    projection,
    qualified,
    source_table_relation,
)

ERROR = "ERROR"
WARNING = "WARNING"
INFO = "INFO"
_SEVERITY_RANK = {ERROR: 0, WARNING: 1, INFO: 2}

FIRST_USER_OID = 16384  # types below it are built in: the same oid means the same type in every database
_REQUIRED_TARGET_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")
_SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")

# A plan must never hang behind a lock or a slow catalog: LIMIT 0 still takes ACCESS SHARE locks.
_SESSION_LIMITS = ("SET lock_timeout = '5s'", "SET statement_timeout = '60s'")


# --------------------------------------------------------------------------------------------- findings

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


# ------------------------------------------------------------------------------------------------ facts

@dataclass(frozen=True)
class TypeInfo:
    """A type as one database's catalogs describe it."""

    oid: int
    typmod: int
    display: str  # format_type(oid, typmod): what people read, e.g. "timestamp(3) without time zone"
    name: str  # typname, schema-qualified unless it lives in pg_catalog ("int4", "auth.user_role")
    category: str  # pg_type.typcategory ("S" strings, "N" numbers, "E" enums, ...)
    enum_labels: tuple[str, ...] | None = None

    @property
    def builtin(self) -> bool:
        return self.oid < FIRST_USER_OID


@dataclass(frozen=True)
class ColumnFacts:
    name: str
    type: TypeInfo
    not_null: bool
    has_default: bool  # a DEFAULT, an identity or a generated column: the database fills it


@dataclass(frozen=True)
class IndexFacts:
    name: str
    columns: tuple[str | None, ...]  # key columns in order; None where the index has an expression
    primary: bool
    unique: bool
    partial: bool

    @property
    def plain(self) -> bool:
        return not self.partial and None not in self.columns


@dataclass(frozen=True)
class TableFacts:
    schema: str
    name: str
    columns: Mapping[str, ColumnFacts] = field(default_factory=dict)
    indexes: tuple[IndexFacts, ...] = ()
    replica_identity: str = "d"  # pg_class.relreplident: d(efault), n(othing), f(ull), i(ndex)
    privileges: frozenset[str] = frozenset()
    owned: bool = True  # the connecting role is (a member of) the owner

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def primary_key(self) -> IndexFacts | None:
        return next((i for i in self.indexes if i.primary), None)


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


@dataclass(frozen=True)
class PublicationFacts:
    tables: frozenset[tuple[str, str]]
    inserts: bool = True
    updates: bool = True
    deletes: bool = True
    truncates: bool = True
    owned: bool = True


@dataclass(frozen=True)
class SourceRole:
    name: str
    superuser: bool
    replication: bool
    can_create: bool  # CREATE on the database (CREATE PUBLICATION needs it)


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


@dataclass(frozen=True)
class TargetRole:
    name: str
    superuser: bool
    can_create: bool  # CREATE on the database
    can_temp: bool  # TEMP on the database: the apply stages rows in temporary tables
    state_schema_exists: bool
    can_use_state_schema: bool  # USAGE and CREATE on an existing `splitter` schema
    can_set_replication_role: bool
    can_use_origin: bool


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


# -------------------------------------------------------------------------------- expression analysis
# Small, conservative readings of an expression's parse tree: each answers only when it is sure.

def _unwrap_casts(node: ast.Node) -> ast.Node:
    while isinstance(node, ast.TypeCast) and node.arg is not None:
        node = node.arg
    return node


def plain_column(expr: str) -> str | None:
    """The source column `expr` is, if it is a bare column reference (`status`), else None."""
    node = parse_expression(expr)
    if isinstance(node, ast.ColumnRef) and node.fields and isinstance(node.fields[0], ast.String):
        return node.fields[0].sval
    return None


def _node_may_be_null(node: ast.Node, source: TableFacts) -> bool | None:
    node = _unwrap_casts(node)
    if isinstance(node, ast.ColumnRef):
        name = node.fields[0].sval if node.fields and isinstance(node.fields[0], ast.String) else None
        col = source.columns.get(name or "")
        return None if col is None else not col.not_null
    if isinstance(node, ast.A_Const):
        return bool(node.isnull)
    if isinstance(node, ast.CoalesceExpr):
        verdicts = [_node_may_be_null(a, source) for a in node.args or ()]
        if any(v is False for v in verdicts):
            return False
        return True if verdicts and all(v is True for v in verdicts) else None
    return None


def may_be_null(expr: str, source: TableFacts) -> bool | None:
    """True if `expr` yields NULL for some source row, False if never, None if it cannot tell."""
    return _node_may_be_null(parse_expression(expr), source)


def _node_values(node: ast.Node, source: TableFacts) -> frozenset[str] | None:
    node = _unwrap_casts(node)
    if isinstance(node, ast.ColumnRef):
        name = node.fields[0].sval if node.fields and isinstance(node.fields[0], ast.String) else None
        col = source.columns.get(name or "")
        labels = col.type.enum_labels if col is not None else None
        return frozenset(labels) if labels is not None else None
    if isinstance(node, ast.A_Const):
        if node.isnull:
            return frozenset()
        return frozenset({node.val.sval}) if isinstance(node.val, ast.String) and node.val.sval is not None else None
    if isinstance(node, ast.CoalesceExpr):
        out: set[str] = set()
        for arg in node.args or ():
            values = _node_values(arg, source)
            if values is None:
                return None
            out |= values
        return frozenset(out)
    return None


def possible_values(expr: str, source: TableFacts) -> frozenset[str] | None:
    """Every text value `expr` can yield, when it is built only of enum columns and string constants."""
    return _node_values(parse_expression(expr), source)


_TRUNC_PRECISION = {"microseconds": 6, "microsecond": 6, "milliseconds": 3, "millisecond": 3}


def truncated_precision(expr: str) -> int | None:
    """Fractional-second digits `expr` keeps when it is `date_trunc('<unit>', ...)`, else None.

    date_trunc returns an unconstrained timestamp (typmod -1), so the result type alone would
    claim six digits even though `date_trunc('second', x)` keeps none.
    """
    node = parse_expression(expr)
    if not isinstance(node, ast.FuncCall) or not node.funcname or not node.args:
        return None
    name = node.funcname[-1]
    unit = node.args[0]
    if not isinstance(name, ast.String) or name.sval != "date_trunc" or not isinstance(unit, ast.A_Const):
        return None
    if not isinstance(unit.val, ast.String) or unit.val.sval is None:
        return None
    return _TRUNC_PRECISION.get(unit.val.sval.lower(), 0)


# ------------------------------------------------------------------------------------- type conversion

_INT_RANK = {"int2": 2, "int4": 4, "int8": 8}
_INT_DIGITS = {"int2": 5, "int4": 10, "int8": 19}
_FLOATS = {"float4", "float8"}
_STRINGS = {"text", "varchar", "bpchar", "name"}
_PRECISION_TYPES = {"timestamp", "timestamptz", "time", "timetz"}
_TIMESTAMPS = {"timestamp", "timestamptz"}


def _numeric_modifier(typmod: int) -> tuple[int, int] | None:
    """(precision, scale) of numeric(p, s), or None for an unconstrained numeric."""
    if typmod < 4:
        return None
    raw = typmod - 4
    # The scale is an 11-bit signed field since PostgreSQL 15 (negative scales round left of the point).
    return (raw >> 16) & 0xFFFF, ((raw & 0x7FF) ^ 1024) - 1024


def _string_length(t: TypeInfo) -> int | None:
    """Maximum characters a string type holds, None if unbounded."""
    if t.name == "name":
        return 63
    if t.name in ("varchar", "bpchar") and t.typmod >= 4:
        return t.typmod - 4
    return None


def _time_precision(t: TypeInfo) -> int:
    return 6 if t.typmod < 0 else t.typmod


def conversion_findings(expr: str, result: TypeInfo, target: TypeInfo,
                        source: TableFacts) -> list[tuple[str, str, str]]:
    """(severity, code, message) for each way storing `expr`'s `result` in `target` can lose or reject data.

    Types with no conversion at all are not judged here: the target database's own planning of the
    apply statement reports them (see `gather_target`).
    """
    out: list[tuple[str, str, str]] = []
    s, t = result, target
    arrow = f"{s.display} → {t.display}"

    if t.enum_labels is not None:
        values = possible_values(expr, source)
        column = plain_column(expr)
        if values is not None:
            missing = sorted(values - set(t.enum_labels))
            if missing:
                src = (f"source column {column} ({source.columns[column].type.display})"
                       if column and column in source.columns else "the expression")
                out.append((ERROR, "enum-label-missing",
                            f"{src} can hold {', '.join(repr(v) for v in missing)}, which enum {t.display} lacks "
                            f"(its labels: {', '.join(t.enum_labels)}); rows with them would be rejected"))
        elif column is not None and s.category == "S":
            out.append((WARNING, "enum-from-text",
                        f"{arrow}: source column {column} is free text; a value that is not a label of {t.display} "
                        f"({', '.join(t.enum_labels)}) is rejected"))
        return out

    if t.name in _STRINGS and s.category in ("S", "E"):
        limit = _string_length(t)
        have = _string_length(s) if s.name in _STRINGS else None
        if limit is not None and (have is None or have > limit):
            values = possible_values(expr, source)
            if values is None or max((len(v) for v in values), default=0) > limit:
                out.append((WARNING, "varchar-narrowed",
                            f"{arrow}: values longer than {limit} characters are rejected"))
        return out

    if t.name in _INT_RANK:
        if s.name in _INT_RANK and _INT_RANK[t.name] < _INT_RANK[s.name]:
            out.append((WARNING, "integer-narrowed", f"{arrow}: values outside the range of {t.display} are rejected"))
        elif s.name == "numeric" or s.name in _FLOATS:
            out.append((WARNING, "fraction-rounded",
                        f"{arrow}: fractions are rounded and values outside the range of {t.display} rejected"))
        return out

    if t.name == "numeric":
        tmod = _numeric_modifier(t.typmod)
        if tmod is None:
            return out
        t_int = tmod[0] - tmod[1]
        if s.name in _INT_DIGITS:
            if t_int < _INT_DIGITS[s.name]:
                out.append((WARNING, "numeric-narrowed", f"{arrow}: values with more than {t_int} integer digits "
                                                         f"are rejected"))
        elif s.name == "numeric":
            smod = _numeric_modifier(s.typmod)
            if smod is None:
                out.append((WARNING, "numeric-narrowed", f"{arrow}: values are rounded to {tmod[1]} decimal "
                                                         f"places and rejected beyond {t_int} integer digits"))
            else:
                if smod[1] > tmod[1]:
                    out.append((WARNING, "numeric-narrowed", f"{arrow}: scale {smod[1]} → {tmod[1]} rounds"))
                if smod[0] - smod[1] > t_int:
                    out.append((WARNING, "numeric-narrowed",
                                f"{arrow}: values with more than {t_int} integer digits are rejected"))
        elif s.name in _FLOATS:
            out.append((WARNING, "numeric-narrowed", f"{arrow}: floating-point values are rounded to "
                                                     f"{tmod[1]} decimal places"))
        return out

    if t.name in _FLOATS:
        if (s.name == "float8" and t.name == "float4") or s.name == "numeric" or (
                s.name == "int8" or (s.name == "int4" and t.name == "float4")):
            out.append((WARNING, "float-precision", f"{arrow}: {t.display} keeps fewer significant digits"))
        return out

    if t.name in _PRECISION_TYPES and s.name in _PRECISION_TYPES:
        if (s.name in _TIMESTAMPS) != (t.name in _TIMESTAMPS):
            return out  # time ↔ timestamp: the target's planning decides whether a conversion exists
        if s.name != t.name and {s.name, t.name} == _TIMESTAMPS:
            out.append((WARNING, "timezone-conversion",
                        f"{arrow}: converted through the session TimeZone of the backfill and apply sessions"))
        have, keep = _time_precision(s), _time_precision(t)
        if keep < have:
            truncated = truncated_precision(expr)
            if truncated is not None and truncated <= keep:
                out.append((INFO, "precision-truncated",
                            f"{arrow}: the expression truncates to {keep} fractional digits explicitly"))
            else:
                out.append((WARNING, "precision-narrowed",
                            f"{arrow}: fractional seconds beyond {keep} digits are rounded, not truncated "
                            f"(write date_trunc(...) to truncate, or accept the rounding)"))
        return out

    if t.name == "date" and s.name in _TIMESTAMPS:
        out.append((WARNING, "time-dropped", f"{arrow}: the time of day is dropped"))
        return out

    if s.oid == t.oid and t.typmod >= 0 and (s.typmod < 0 or s.typmod > t.typmod):
        out.append((WARNING, "type-narrowed", f"{arrow}: the target's type modifier is narrower"))
    return out


# ------------------------------------------------------------------------------------------------ rules

def _route_table_name(route: Route) -> str:
    return f"{route.target_schema}.{route.target_table}"


class _Collector:
    def __init__(self) -> None:
        self.findings: list[Finding] = []

    def add(self, severity: str, code: str, message: str, *, route: Route | None = None,
            service: str | None = None, table: str | None = None, column: str | None = None,
            origin: str | None = None) -> None:
        if route is not None:
            service = service or route.service.name
            table = table or _route_table_name(route)
            origin = origin or str(route.table.origin)
        self.findings.append(Finding(severity, code, message, service, table, column, origin))


def collect_findings(topology: Topology, source: SourceFacts | Unreachable,
                     targets: Mapping[str, TargetFacts | Unreachable], *,
                     slot: str = "splitter", publication: str = "splitter") -> list[Finding]:
    """Every finding for `topology` given what the databases said; ERRORs first, then WARNINGs, INFOs."""
    out = _Collector()
    if isinstance(source, Unreachable):
        out.add(ERROR, source.code, source.describe())
    else:
        _source_preflight(out, topology, source, slot, publication)
        _unrouted(out, topology, source)
    for service in topology.services:
        target = targets.get(service.name)
        if isinstance(target, Unreachable):
            out.add(ERROR, target.code, target.describe(), service=service.name,
                    origin=str(service.origin))
        elif target is not None:
            _target_preflight(out, service.name, topology.routes_for(service), target)
        for route in topology.routes_for(service):
            _route_rules(out, route, source if isinstance(source, SourceFacts) else None,
                         target if isinstance(target, TargetFacts) else None)
    return sorted(out.findings, key=lambda f: _SEVERITY_RANK[f.severity])


def _source_preflight(out: _Collector, topology: Topology, source: SourceFacts, slot: str,
                      publication: str) -> None:
    if source.wal_level != "logical":
        out.add(ERROR, "wal-level", f"source has wal_level = {source.wal_level}; logical replication needs "
                                    f"wal_level = logical (set it and restart PostgreSQL)")
    if source.slot.problem:
        out.add(ERROR, "slot-unusable", source.slot.problem)
    elif not source.slot.exists and source.replication_slots_used >= source.max_replication_slots:
        out.add(ERROR, "no-free-slot",
                f"replication slot {slot!r} does not exist and all {source.max_replication_slots} of "
                f"max_replication_slots are taken ({source.replication_slots_used} in use)")
    elif source.slot.exists:
        out.add(INFO, "slot-exists", f"replication slot {slot!r} exists; run resumes from it"
                + (" (a walsender is using it now)" if source.slot.active else ""))
    if not source.slot.active and source.wal_senders_used >= source.max_wal_senders:
        out.add(ERROR, "no-free-wal-sender",
                f"all {source.max_wal_senders} of max_wal_senders are in use ({source.wal_senders_used}); "
                f"capture needs one")
    role = source.role
    if not (role.superuser or role.replication):
        out.add(ERROR, "no-replication-role",
                f"source role {role.name!r} has neither REPLICATION nor superuser; capture cannot open a "
                f"replication connection (ALTER ROLE {role.name} REPLICATION)")

    routed = topology.source_tables()
    present = [t for t in routed if t in source.tables]
    first_route: dict[tuple[str, str], str] = {}
    for route in topology.routes():
        first_route.setdefault((route.source_schema, route.source_table), str(route.table.origin))
    for key in present:
        table = source.tables[key]
        origin = first_route.get(key)
        if "SELECT" not in table.privileges and not role.superuser:
            out.add(ERROR, "no-select", f"source role {role.name!r} cannot SELECT {table.qualified}",
                    table=table.qualified, origin=origin)
        if table.primary_key is None:
            out.add(ERROR, "no-primary-key",
                    f"source table {table.qualified} has no primary key; splitter keys every change by it",
                    table=table.qualified, origin=origin)
        if table.replica_identity == "n":
            out.add(ERROR, "replica-identity",
                    f"source table {table.qualified} has REPLICA IDENTITY NOTHING: updates and deletes carry no "
                    f"key (ALTER TABLE ... REPLICA IDENTITY DEFAULT)", table=table.qualified, origin=origin)
        elif table.replica_identity == "d" and table.primary_key is None:
            out.add(ERROR, "replica-identity",
                    f"source table {table.qualified} has REPLICA IDENTITY DEFAULT but no primary key: updates and "
                    f"deletes carry no key", table=table.qualified, origin=origin)

    pub = source.publication
    if pub is None:
        out.add(INFO, "publication-created", f"publication {publication!r} does not exist; run will create it "
                                             f"for the {len(routed)} routed tables")
        if not (role.superuser or role.can_create):
            out.add(ERROR, "no-create-publication",
                    f"source role {role.name!r} lacks CREATE on the source database, which CREATE PUBLICATION needs")
        _must_own(out, role, [source.tables[k] for k in present], "create the publication for")
        return
    missing = [t for t in routed if t not in pub.tables]
    if missing:
        names = ", ".join(f"{s}.{n}" for s, n in missing)
        out.add(INFO, "publication-extended", f"publication {publication!r} lacks {names}; run will add them")
        if not (role.superuser or pub.owned):
            out.add(ERROR, "publication-not-owned",
                    f"publication {publication!r} lacks {names} and source role {role.name!r} does not own it, "
                    f"so run cannot add them")
        _must_own(out, role, [source.tables[k] for k in missing if k in source.tables], "add to the publication")
    skipped = [kind for kind, on in (("insert", pub.inserts), ("update", pub.updates), ("delete", pub.deletes))
               if not on]
    if skipped:
        out.add(ERROR, "publication-actions",
                f"publication {publication!r} does not publish {', '.join(skipped)}; those changes would never "
                f"reach the services (ALTER PUBLICATION {publication} SET (publish = 'insert, update, delete, "
                f"truncate'))")
    if not pub.truncates:
        out.add(WARNING, "publication-actions",
                f"publication {publication!r} does not publish truncate; a TRUNCATE in the source is not applied")


def _must_own(out: _Collector, role: SourceRole, tables: Iterable[TableFacts], what: str) -> None:
    if role.superuser:
        return
    for table in tables:
        if not table.owned:
            out.add(ERROR, "not-table-owner",
                    f"source role {role.name!r} does not own {table.qualified}, so run cannot {what} it",
                    table=table.qualified)


def _unrouted(out: _Collector, topology: Topology, source: SourceFacts) -> None:
    routed = set(topology.source_tables())
    listed: set[tuple[str, str]] = set()
    for name in topology.unrouted:
        key = split_qualified(name, topology.source_schema)
        listed.add(key)
        if key in routed:
            out.add(WARNING, "unrouted-but-routed", f"{name} is listed in unrouted, but a service takes it",
                    table=".".join(key), origin=str(topology.origin))
        elif key not in source.tables:
            out.add(WARNING, "unrouted-missing", f"{name} is listed in unrouted but the source has no such table",
                    table=".".join(key), origin=str(topology.origin))
    for key in source.tables:
        if key not in routed and key not in listed:
            out.add(WARNING, "not-migrated",
                    f"source table {key[0]}.{key[1]} is not migrated: no service takes it (list it in "
                    f"Topology.unrouted if that is intended)", table=f"{key[0]}.{key[1]}",
                    origin=str(topology.origin))


def _target_preflight(out: _Collector, service: str, routes: Sequence[Route], target: TargetFacts) -> None:
    role = target.role
    if not role.superuser:
        if not role.can_create:
            out.add(ERROR, "no-create-schema",
                    f"role {role.name!r} lacks CREATE on the database of service {service}: the worker runs "
                    f"CREATE SCHEMA IF NOT EXISTS {STATE_SCHEMA}, which PostgreSQL checks even when the schema "
                    f"exists", service=service)
        if role.state_schema_exists and not role.can_use_state_schema:
            out.add(ERROR, "no-state-schema-privilege",
                    f"role {role.name!r} lacks USAGE or CREATE on schema {STATE_SCHEMA} (checkpoints live there)",
                    service=service)
        if not role.can_temp:
            out.add(ERROR, "no-temp",
                    f"role {role.name!r} lacks TEMP on the database of service {service}: the apply stages rows "
                    f"in temporary tables", service=service)
        if not role.can_set_replication_role:
            out.add(ERROR, "no-session-replication-role",
                    f"role {role.name!r} may not SET session_replication_role (superuser, or on PostgreSQL 15+ "
                    f"GRANT SET ON PARAMETER session_replication_role TO {role.name})", service=service)
        if not role.can_use_origin:
            out.add(WARNING, "no-replication-origin",
                    f"role {role.name!r} cannot use a replication origin: applied rows are not marked, so a "
                    f"reverse stream after cutover would send them back (GRANT EXECUTE ON FUNCTION "
                    f"pg_replication_origin_create(text), pg_replication_origin_session_setup(text))",
                    service=service)
    for route in routes:
        table = target.tables.get((route.target_schema, route.target_table))
        if table is None or role.superuser:
            continue
        lacking = [p for p in _REQUIRED_TARGET_PRIVILEGES if p not in table.privileges]
        if lacking:
            out.add(ERROR, "missing-privilege",
                    f"role {role.name!r} lacks {', '.join(lacking)} on {table.qualified}", route=route)


def _route_rules(out: _Collector, route: Route, source: SourceFacts | None, target: TargetFacts | None) -> None:
    src_key = (route.source_schema, route.source_table)
    src_table = source.tables.get(src_key) if source else None
    relation = source.relations.get(src_key) if source else None
    if source is not None and (src_table is None or relation is None):
        out.add(ERROR, "source-table-missing",
                f"{route.describe()}: source table {route.source_schema}.{route.source_table} does not exist",
                route=route)
    unreadable: set[str] = set()
    if relation is not None:
        unreadable = _source_columns(out, route, relation)

    tgt_table = target.tables.get((route.target_schema, route.target_table)) if target else None
    if target is not None and tgt_table is None:
        out.add(ERROR, "target-table-missing",
                f"{route.describe()}: target table {_route_table_name(route)} does not exist in database "
                f"{route.service.database}", route=route)

    for column, expr in route.table.columns.items():
        ident = (route.service.name, route.target_schema, route.target_table, column)
        tcol = tgt_table.columns.get(column) if tgt_table else None
        if tgt_table is not None and tcol is None:
            out.add(ERROR, "target-column-missing",
                    f"column {column} does not exist in {tgt_table.qualified} (database {route.service.database})",
                    route=route, column=column)
        if column in unreadable:
            continue
        src_check = source.results.get(ident) if source else None
        if src_check is not None and src_check.error is not None and src_check.sqlstate != "42501":
            out.add(ERROR, "expression-fails",
                    f"expression {expr!r} fails in the source: {src_check.error}", route=route, column=column)
            continue
        tgt_check = target.results.get(ident) if target else None
        if tgt_check is not None and tgt_check.error is not None and tgt_check.sqlstate != "42501":
            incompatible = tgt_check.sqlstate in ("42804", "42846")  # datatype_mismatch, cannot_coerce
            result = src_check.result.display if src_check and src_check.result else "its result"
            out.add(ERROR, "incompatible-type" if incompatible else "expression-fails-in-target",
                    f"expression {expr!r} ({result}) cannot be stored in {column}"
                    f"{' ' + tcol.type.display if tcol else ''}: {tgt_check.error}", route=route, column=column)
            continue
        if tcol is None or src_table is None:
            continue
        tcol_where = f"{tgt_table.qualified}." if tgt_table else ""
        if src_check is not None and src_check.result is not None:
            for severity, code, message in conversion_findings(expr, src_check.result, tcol.type, src_table):
                out.add(severity, code, f"{tcol_where}{column} ← {expr}: {message}", route=route, column=column)
        if tcol.not_null and may_be_null(expr, src_table):
            out.add(ERROR, "not-null-from-nullable",
                    f"{tcol_where}{column} is NOT NULL but {expr!r} yields NULL where "
                    f"source {route.source_schema}.{route.source_table} has NULL (wrap it in coalesce(...))",
                    route=route, column=column)

    if tgt_table is not None:
        _unmapped_target_columns(out, route, tgt_table)
        _key_rules(out, route, tgt_table)
        if src_table is not None:
            _unique_rules(out, route, src_table, tgt_table)


def _source_columns(out: _Collector, route: Route, relation: RelationSchema) -> set[str]:
    """Columns reading source columns that do not exist; reported through sqlrender's own check."""
    columns: Mapping[str, ColumnSchema] = {c.name: c for c in relation.columns}
    bad = [name for name, expr in route.table.columns.items() if expression_columns(expr) - columns.keys()]
    problems = check_route_against(route, columns)
    prefix = f"{route.table.origin}: "
    for i, problem in enumerate(problems):
        text = problem[len(prefix):] if problem.startswith(prefix) else problem
        # check_route_against reports missing columns in declaration order, then the key check.
        if i < len(bad):
            out.add(ERROR, "source-column-missing", text, route=route, column=bad[i])
        else:
            out.add(ERROR, "key-outside-primary-key", text, route=route)
    return set(bad)


def _unmapped_target_columns(out: _Collector, route: Route, table: TableFacts) -> None:
    for name, col in table.columns.items():
        if name in route.table.columns:
            continue
        if col.has_default:
            out.add(INFO, "filled-by-default", f"{table.qualified}.{name} is not in the topology: filled by default",
                    route=route, column=name)
        elif col.not_null:
            out.add(ERROR, "target-column-unfilled",
                    f"{table.qualified}.{name} is NOT NULL, has no default and is not in the topology: every "
                    f"insert would fail (map it in topology.py or give it a default)", route=route, column=name)
        else:
            out.add(INFO, "left-null", f"{table.qualified}.{name} is not in the topology: left NULL",
                    route=route, column=name)


def _key_rules(out: _Collector, route: Route, table: TableFacts) -> None:
    key = set(route.table.key)
    if any(i.plain and (i.primary or i.unique) and set(i.columns) == key for i in table.indexes):
        return
    candidates = [f"{i.name} ({', '.join(c or '<expr>' for c in i.columns)})"
                  for i in table.indexes if i.primary or i.unique]
    out.add(ERROR, "key-not-unique",
            f"key ({', '.join(route.table.key)}) matches no primary key or unique index of {table.qualified} "
            f"(it has: {', '.join(candidates) or 'none'}); the apply's ON CONFLICT needs one exactly on the key",
            route=route)


def _unique_rules(out: _Collector, route: Route, source: TableFacts, target: TableFacts) -> None:
    enforced = [set(i.columns) for i in source.indexes if (i.primary or i.unique) and i.plain]
    for index in target.indexes:
        if not (index.primary or index.unique):
            continue
        read: set[str] = set()
        injective = True
        for col in index.columns:
            expr = route.table.columns.get(col) if col else None
            name = plain_column(expr) if expr is not None else None
            if name is None:
                # An expression, a constant or a column the database fills may map distinct rows to one value.
                injective = False
                break
            read.add(name)
        if injective and any(cols <= read for cols in enforced):
            continue
        mapped = ", ".join(f"{c} ← {route.table.columns.get(c or '', '<not mapped>')}" for c in index.columns)
        out.add(WARNING, "unique-not-enforced-in-source",
                f"unique index {index.name} of {target.qualified} ({mapped}) is not enforced by any unique index of "
                f"source {source.qualified}: rows that duplicate it in the source will fail to apply",
                route=route, column=index.columns[0] if len(index.columns) == 1 else None)


# ---------------------------------------------------------------------------------------------- routes

def describe_routes(topology: Topology, source: SourceFacts | Unreachable,
                    targets: Mapping[str, TargetFacts | Unreachable]) -> list[dict[str, Any]]:
    """The routing table: per route its key and each column's expression, source result type and target type."""
    routes = []
    for route in topology.routes():
        target = targets.get(route.service.name)
        tgt_table = target.tables.get((route.target_schema, route.target_table)) \
            if isinstance(target, TargetFacts) else None
        columns = []
        for name, expr in route.table.columns.items():
            ident = (route.service.name, route.target_schema, route.target_table, name)
            check = source.results.get(ident) if isinstance(source, SourceFacts) else None
            tcol = tgt_table.columns.get(name) if tgt_table else None
            columns.append({
                "column": name, "expression": expr,
                "source_type": check.result.display if check and check.result else None,
                "target_type": tcol.type.display if tcol else None,
            })
        if tgt_table is not None:
            for name, tcol in tgt_table.columns.items():
                if name not in route.table.columns:
                    columns.append({"column": name, "expression": None, "source_type": None,
                                    "target_type": tcol.type.display,
                                    "filled_by": "default" if tcol.has_default else "null"})
        status = "unreachable" if isinstance(target, Unreachable) else "ok" if tgt_table else "missing"
        routes.append({
            "source": f"{route.source_schema}.{route.source_table}",
            "target_status": status,
            "service": route.service.name,
            "database": route.service.database,
            "target": _route_table_name(route),
            "key": list(route.table.key),
            "origin": str(route.table.origin),
            "columns": columns,
        })
    return routes


# ------------------------------------------------------------------------------------------- gathering

_TABLES_SQL = """
SELECT c.oid, n.nspname, c.relname, c.relreplident, pg_has_role(c.relowner, 'USAGE'),
       has_table_privilege(c.oid, 'SELECT'), has_table_privilege(c.oid, 'INSERT'),
       has_table_privilege(c.oid, 'UPDATE'), has_table_privilege(c.oid, 'DELETE')
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
   AND (n.nspname = ANY(%(schemas)s)
        OR (n.nspname, c.relname) IN (SELECT * FROM unnest(%(schemas_of)s::text[], %(names)s::text[])))
"""

_TYPE_COLUMNS = """format_type(t.oid, {mod}), t.typname, tn.nspname, t.typcategory,
       CASE WHEN t.typtype = 'e' THEN ARRAY(SELECT e.enumlabel FROM pg_enum e WHERE e.enumtypid = t.oid
                                            ORDER BY e.enumsortorder) END"""

_COLUMNS_SQL = f"""
SELECT a.attrelid, a.attname, a.atttypid, a.atttypmod, {_TYPE_COLUMNS.format(mod="a.atttypmod")},
       a.attnotnull, a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> ''
  FROM pg_attribute a
  JOIN pg_type t ON t.oid = a.atttypid
  JOIN pg_namespace tn ON tn.oid = t.typnamespace
 WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attrelid, a.attnum
"""

# Key columns only (INCLUDE columns do not take part in uniqueness); attnum 0 is an expression.
_INDEXES_SQL = """
SELECT i.indrelid, ic.relname, i.indisprimary, i.indisunique, i.indpred IS NOT NULL,
       ARRAY(SELECT a.attname FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
               LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
              WHERE k.ord <= i.indnkeyatts ORDER BY k.ord)
  FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
 WHERE i.indrelid = ANY(%s) AND i.indisvalid
 ORDER BY ic.relname
"""

_RESOLVE_TYPES_SQL = f"""
SELECT x.oid, x.mod, {_TYPE_COLUMNS.format(mod="x.mod")}
  FROM unnest(%s::oid[], %s::int4[]) AS x(oid, mod)
  JOIN pg_type t ON t.oid = x.oid
  JOIN pg_namespace tn ON tn.oid = t.typnamespace
"""


def _type_info(oid: int, typmod: int, display: str, typname: str, nspname: str, category: str,
               labels: list[str] | None) -> TypeInfo:
    name = typname if nspname == "pg_catalog" else f"{nspname}.{typname}"
    return TypeInfo(oid, typmod, display, name, category, tuple(labels) if labels is not None else None)


def _read_tables(conn: psycopg.Connection[Any], *, schemas: Sequence[str] = (),
                 pairs: Sequence[tuple[str, str]] = (),
                 detail: Iterable[tuple[str, str]] | None = None) -> dict[tuple[str, str], TableFacts]:
    """Tables of `schemas` plus the `pairs`; columns and indexes for those in `detail` (all if None)."""
    rows = conn.execute(_TABLES_SQL, {"schemas": list(schemas), "schemas_of": [p[0] for p in pairs],
                                      "names": [p[1] for p in pairs]}).fetchall()
    wanted = None if detail is None else set(detail)
    oids = {row[0]: (row[1], row[2]) for row in rows if wanted is None or (row[1], row[2]) in wanted}
    columns: dict[int, dict[str, ColumnFacts]] = {oid: {} for oid in oids}
    for rel, name, typoid, typmod, display, typname, nsp, cat, labels, notnull, hasdef in conn.execute(
            _COLUMNS_SQL, (list(oids),)).fetchall():
        columns[rel][name] = ColumnFacts(name, _type_info(typoid, typmod, display, typname, nsp, cat, labels),
                                         bool(notnull), bool(hasdef))
    indexes: dict[int, list[IndexFacts]] = {oid: [] for oid in oids}
    for rel, name, primary, unique, is_partial, cols in conn.execute(_INDEXES_SQL, (list(oids),)).fetchall():
        indexes[rel].append(IndexFacts(name, tuple(cols), bool(primary), bool(unique), bool(is_partial)))
    out = {}
    for oid, schema, table, replident, owned, *privileges in rows:
        granted = frozenset(p for p, on in zip(_REQUIRED_TARGET_PRIVILEGES, privileges, strict=True) if on)
        out[(schema, table)] = TableFacts(schema, table, columns.get(oid, {}), tuple(indexes.get(oid, ())),
                                          str(replident), granted, bool(owned))
    return out


def _db_message(exc: psycopg.Error, *dsns: str) -> str:
    """The server's own one-line message (no statement text, which can be long), masked."""
    diag = getattr(exc, "diag", None)
    primary = diag.message_primary if diag is not None else None
    return mask_secrets(" ".join((primary or str(exc)).split()), *dsns)


def _try_select(conn: psycopg.Connection[Any], query: sql.Composed,
                dsn: str) -> tuple[list[tuple[int, int]] | None, ExprCheck | None]:
    """Run `query`; the (type oid, typmod) of each result column, or the failure."""
    try:
        with conn.cursor() as cur:
            cur.execute(query)
            res = cur.pgresult
            if res is None:
                return [], None
            return [(res.ftype(i), res.fmod(i)) for i in range(res.nfields)], None
    except psycopg.Error as exc:
        return None, ExprCheck(error=_db_message(exc, dsn), sqlstate=getattr(exc, "sqlstate", None))


def _resolve_types(conn: psycopg.Connection[Any], types: Iterable[tuple[int, int]]) -> dict[tuple[int, int], TypeInfo]:
    pairs = sorted(set(types))
    if not pairs:
        return {}
    rows = conn.execute(_RESOLVE_TYPES_SQL, ([p[0] for p in pairs], [p[1] for p in pairs])).fetchall()
    return {(oid, mod): _type_info(oid, mod, *rest) for oid, mod, *rest in rows}


def _readable(route: Route, relation: RelationSchema) -> list[str]:
    """Target columns whose expressions read only columns the source relation has."""
    have = {c.name for c in relation.columns}
    return [name for name, expr in route.table.columns.items() if expression_columns(expr) <= have]


def _plan_source_expressions(conn: psycopg.Connection[Any], route: Route, relation: RelationSchema,
                             dsn: str) -> dict[RouteColumn, ExprCheck]:
    """Plan the route's projection (backfill's own SELECT) with LIMIT 0; per column where it fails."""
    names = _readable(route, relation)
    rel_sql = source_table_relation(route.source_schema, route.source_table, relation.columns)

    def query(cols: Sequence[str]) -> sql.Composed:
        return sql.SQL("{} LIMIT 0").format(projection(route, [TargetColumn(c) for c in cols], rel_sql))

    ident = (route.service.name, route.target_schema, route.target_table)
    types, _ = _try_select(conn, query(names), dsn) if names else ([], None)
    raw: dict[str, tuple[int, int] | ExprCheck] = {}
    if types is not None:
        raw.update(zip(names, types, strict=True))
    else:
        for name in names:  # find which expressions fail, each with its own message
            one, fail = _try_select(conn, query([name]), dsn)
            raw[name] = one[0] if one else (fail or ExprCheck(error="no result", sqlstate=None))
    resolved = _resolve_types(conn, [v for v in raw.values() if isinstance(v, tuple)])
    return {(*ident, name): (v if isinstance(v, ExprCheck) else ExprCheck(result=resolved.get(v)))
            for name, v in raw.items()}


def gather_source(conn: psycopg.Connection[Any], topology: Topology, *, slot: str, publication: str,
                  dsn: str) -> SourceFacts:
    """Everything the rules need from the source database, read only."""
    for setting in _SESSION_LIMITS:
        conn.execute(setting)
    row = conn.execute(
        "SELECT current_setting('wal_level'), current_setting('max_replication_slots')::int, "
        "(SELECT count(*) FROM pg_replication_slots), current_setting('max_wal_senders')::int, "
        "(SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender'), "
        "current_user, r.rolsuper, r.rolreplication, has_database_privilege(current_database(), 'CREATE') "
        "FROM pg_roles r WHERE r.rolname = current_user").fetchone()
    assert row is not None
    wal_level, max_slots, slots_used, max_senders, senders_used, user, superuser, replication, can_create = row

    try:
        info = slot_info(conn, slot)
        if info is not None:
            check_slot_usable(info, slot)
        slot_facts = SlotFacts(exists=info is not None, active=bool(info and info.active))
    except (ConfigurationError, FatalError) as exc:
        slot_facts = SlotFacts(exists=True, problem=str(exc))

    pub_row = conn.execute(
        "SELECT pubinsert, pubupdate, pubdelete, pubtruncate, pg_has_role(pubowner, 'USAGE') "
        "FROM pg_publication WHERE pubname = %s", (publication,)).fetchone()
    pub = None
    if pub_row is not None:
        # pg_publication_tables resolves FOR ALL TABLES and FOR TABLES IN SCHEMA too.
        published = conn.execute("SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s",
                                  (publication,)).fetchall()
        pub = PublicationFacts(frozenset((s, t) for s, t in published), *(bool(v) for v in pub_row))

    routed = topology.source_tables()
    schemas = sorted({topology.source_schema, *(s for s, _ in routed)})
    tables = _read_tables(conn, schemas=schemas, detail=routed)
    relations: dict[tuple[str, str], RelationSchema] = {}
    results: dict[RouteColumn, ExprCheck] = {}
    for key in routed:
        if key in tables:
            relations[key] = relation_schema(conn, *key)
    for route in topology.routes():
        relation = relations.get((route.source_schema, route.source_table))
        if relation is not None:
            results.update(_plan_source_expressions(conn, route, relation, dsn))
    return SourceFacts(
        wal_level=str(wal_level), max_replication_slots=int(max_slots), replication_slots_used=int(slots_used),
        max_wal_senders=int(max_senders), wal_senders_used=int(senders_used), slot=slot_facts,
        role=SourceRole(str(user), bool(superuser), bool(replication), bool(can_create)),
        publication=pub, tables=tables, relations=relations, results=results)


def _typed_relation(relation: RelationSchema) -> sql.Composed:
    """A relation with the source row's columns and types and no rows: what the apply's staging yields."""
    return sql.SQL("SELECT {} LIMIT 0").format(sql.SQL(", ").join(
        sql.SQL("NULL::{} AS {}").format(checked_type(c.sql_type), sql.Identifier(c.name))
        for c in relation.columns))


def _apply_columns(conn: psycopg.Connection[Any], route: Route, table: TableFacts) -> dict[str, TargetColumn]:
    """The apply's target columns (with its casts), from pg_sink itself when the table is complete."""
    try:
        return {c.name: c for c in target_columns(conn, route)}
    except ConfigurationError:
        # Some column is missing (reported by the rules): mirror pg_sink's rule for the others,
        # an explicit cast to user-defined types, none for built-ins.
        return {name: TargetColumn(name, None if col.type.builtin else col.type.display)
                for name, col in table.columns.items() if name in route.table.columns}


def gather_target(conn: psycopg.Connection[Any], service: str, routes: Sequence[Route],
                  relations: Mapping[tuple[str, str], RelationSchema], *, dsn: str) -> TargetFacts:
    """Everything the rules need from one service database, read only."""
    for setting in _SESSION_LIMITS:
        conn.execute(setting)
    row = conn.execute(
        "SELECT current_user, r.rolsuper, has_database_privilege(current_database(), 'CREATE'), "
        "has_database_privilege(current_database(), 'TEMP'), n.oid IS NOT NULL, "
        "n.oid IS NOT NULL AND has_schema_privilege(n.oid, 'USAGE') AND has_schema_privilege(n.oid, 'CREATE'), "
        "has_function_privilege('pg_replication_origin_session_setup(text)', 'EXECUTE') "
        "AND has_function_privilege('pg_replication_origin_create(text)', 'EXECUTE') "
        "FROM pg_roles r LEFT JOIN pg_namespace n ON n.nspname = %s WHERE r.rolname = current_user",
        (STATE_SCHEMA,)).fetchone()
    assert row is not None
    user, superuser, can_create, can_temp, schema_exists, can_use_schema, can_origin = row
    can_set = bool(superuser)
    if not can_set and conn.info.server_version >= 150000:
        granted = conn.execute("SELECT has_parameter_privilege('session_replication_role', 'SET')").fetchone()
        can_set = bool(granted and granted[0])
    role = TargetRole(str(user), bool(superuser), bool(can_create), bool(can_temp), bool(schema_exists),
                      bool(can_use_schema), can_set, bool(superuser or can_origin))

    tables = _read_tables(conn, pairs=[(r.target_schema, r.target_table) for r in routes])
    results: dict[RouteColumn, ExprCheck] = {}
    for route in routes:
        table = tables.get((route.target_schema, route.target_table))
        relation = relations.get((route.source_schema, route.source_table))
        if table is None or relation is None:
            continue
        apply_cols = _apply_columns(conn, route, table)
        rel_sql = _typed_relation(relation)
        for name in _readable(route, relation):
            if name not in apply_cols:
                continue
            stmt = sql.SQL("EXPLAIN INSERT INTO {} ({}) {}").format(
                qualified(route.target_schema, route.target_table), sql.Identifier(name),
                projection(route, [apply_cols[name]], rel_sql))
            _, failure = _try_select(conn, stmt, dsn)
            if failure is not None:
                results[(service, route.target_schema, route.target_table, name)] = failure
    return TargetFacts(role=role, tables=tables, results=results)


# ------------------------------------------------------------------------------------------------ entry

@dataclass(frozen=True)
class PlanResult:
    routes: list[dict[str, Any]]
    findings: list[Finding]

    @property
    def errors(self) -> int:
        return sum(1 for f in self.findings if f.severity == ERROR)

    @property
    def warnings(self) -> int:
        return sum(1 for f in self.findings if f.severity == WARNING)


def _gather_error(exc: Exception, what: str, dsn: str, *, connected: bool) -> Unreachable:
    # connect() wraps the driver's error as "cannot connect to <what>: ..."; the driver's own
    # reason is the useful part, and the message we build names the database once.
    cause = exc.__cause__ if isinstance(exc, SplitterError) and isinstance(exc.__cause__, psycopg.Error) else exc
    if isinstance(cause, psycopg.Error):
        message = _db_message(cause, dsn)
    else:
        message = " ".join(mask_secrets(str(cause), dsn).split())
    return Unreachable(what, mask_dsn(dsn), message, connected)


_Facts = TypeVar("_Facts")


def _inspect(dsn: str, what: str, read: Callable[[psycopg.Connection[Any]], _Facts]) -> _Facts | Unreachable:
    """`read` on a fresh read-only-by-convention session, or why the database could not be read."""
    try:
        conn = connect(dsn, what, autocommit=True, application_name="splitter-plan")
    except SplitterError as exc:
        return _gather_error(exc, what, dsn, connected=False)
    try:
        with conn:
            return read(conn)
    except (psycopg.Error, SplitterError) as exc:
        return _gather_error(exc, what, dsn, connected=True)


def build_plan(settings: Settings) -> PlanResult:
    """Connect to the source and every service database, gather their facts, and judge them."""
    topology = settings.topology
    source = _inspect(settings.source_dsn, f"source database {topology.source_database}",
                      partial(gather_source, topology=topology, slot=settings.slot,
                              publication=settings.publication, dsn=settings.source_dsn))
    relations = source.relations if isinstance(source, SourceFacts) else {}

    targets: dict[str, TargetFacts | Unreachable] = {}
    for service in topology.services:
        dsn = settings.target_dsn(service.name)
        targets[service.name] = _inspect(
            dsn, f"database {service.database} of service {service.name}",
            partial(gather_target, service=service.name, routes=topology.routes_for(service), relations=relations,
                    dsn=dsn))

    findings = collect_findings(topology, source, targets, slot=settings.slot, publication=settings.publication)
    return PlanResult(describe_routes(topology, source, targets), findings)


def render_text(plan: PlanResult, out: TextIO) -> None:
    """The routing table and the findings, for people."""
    print("ROUTES", file=out)
    for route in plan.routes:
        print(f"\n{route['source']} → {route['service']}: {route['database']}.{route['target']}  "
              f"key ({', '.join(route['key'])})  [{route['origin']}]", file=out)
        rows = []
        for col in route["columns"]:
            expr = col["expression"] if col["expression"] is not None else f"({col.get('filled_by')})"
            unknown = "<unknown>" if route["target_status"] == "unreachable" else "<missing>"
            rows.append((col["column"], expr, col["source_type"] or "", col["target_type"] or unknown))
        widths = [max((len(r[i]) for r in rows), default=0) for i in range(3)]
        for name, expr, src_type, tgt_type in rows:
            print(f"    {name:<{widths[0]}}  ← {expr:<{widths[1]}}  {src_type:<{widths[2]}} → {tgt_type}", file=out)
    print("\nFINDINGS", file=out)
    if not plan.findings:
        print("    none", file=out)
    for f in plan.findings:
        origin = f"  ({f.origin})" if f.origin else ""
        where = f" [{f.where}]" if f.where else ""
        print(f"{f.severity:<8}{f.code}{where} {f.message}{origin}", file=out)
    infos = len(plan.findings) - plan.errors - plan.warnings
    verdict = "FAILED: fix the errors before running" if plan.errors else "OK"
    print(f"\n{plan.errors} error(s), {plan.warnings} warning(s), {infos} info: plan {verdict}", file=out)


def render_json(plan: PlanResult, out: TextIO) -> None:
    json.dump({"routes": plan.routes, "findings": [f.as_dict() for f in plan.findings],
               "errors": plan.errors, "warnings": plan.warnings}, out, indent=2, ensure_ascii=False)
    out.write("\n")


def run_plan(settings: Settings, json_output: bool = False, out: TextIO | None = None) -> int:
    """`splitter plan`: print the plan; 1 if it found any ERROR, else 0."""
    plan = build_plan(settings)
    stream = out if out is not None else sys.stdout
    (render_json if json_output else render_text)(plan, stream)
    return 1 if plan.errors else 0


__all__ = [
    "ERROR",
    "INFO",
    "WARNING",
    "Finding",
    "PlanResult",
    "build_plan",
    "collect_findings",
    "conversion_findings",
    "describe_routes",
    "gather_source",
    "gather_target",
    "run_plan",
]

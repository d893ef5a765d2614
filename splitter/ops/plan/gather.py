"""Gathering the plan's facts: which reads to make in the source and each service database, in what order.

Owns: `gather` (every database of the settings, each on its own session, an unreadable one
recorded as `Unreachable` instead of raised), `gather_source` and `gather_target` (the reads one
database needs, turned into `SourceFacts` / `TargetFacts`).  Expressions are not judged by
parsing alone: each route's projection (the exact SQL backfill runs) is planned in the source with
LIMIT 0, which resolves every function and operator and reports the result type of each column;
and each column is planned again in its service database as `EXPLAIN INSERT INTO <target>
(<column>) SELECT <expression> ...` over a row of the source's types, the way the worker's apply
runs it, which is PostgreSQL's own verdict on whether the assignment to the target type exists.
EXPLAIN without ANALYZE executes nothing.  The routed source tables' columns are also read the way the
cutover's reverse preflight reads them (`connectors.pg.cutover_sql.writeback_columns`).  Then the data:
each target constraint the schemas do not prove safe (`data.data_checks` chooses) is checked against the
source's rows with one aggregate query, on a session of its own (`gather_data`).
Must not: run SQL itself (connectors.pg.inspect and the other connector functions do), write
anything to any database, or decide anything about what it found (the rules do).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar

from connectors.pg import inspect, plan_data, plan_probes
from connectors.pg.catalog import target_columns
from connectors.pg.client import Connection
from connectors.pg.cutover_sql import writeback_columns
from connectors.pg.inspect import QueryFailure, TableFacts
from connectors.pg.plan_data import DataCheck, DataViolations
from connectors.pg.positions import slot_info
from connectors.pg.source import check_slot_usable, relation_schema
from connectors.pg.state import STATE_SCHEMA
from splitter.core.dsn import SOURCE_DATABASE, dsn_origin, mask_dsn, service_database
from splitter.core.envelope import RelationSchema
from splitter.core.errors import ConfigurationError, FatalError
from splitter.ops.plan.data import data_checks, default_meaning
from splitter.ops.plan.facts import ExprCheck, RouteColumn, SlotFacts, SourceFacts, TargetFacts, Unreachable
from splitter.pipeline.config import Settings
from splitter.topology.expressions import expression_columns
from splitter.topology.inversion import SourceColumn
from splitter.topology.model import Route, Topology
from splitter.topology.sqlrender import TargetColumn

_Facts = TypeVar("_Facts")


def _limit(conn: Connection[Any]) -> None:
    # A plan must never hang behind a lock or a slow catalog: LIMIT 0 still takes ACCESS SHARE locks.
    inspect.limit_session(conn, lock_timeout="5s", statement_timeout="60s")


def _readable(route: Route, relation: RelationSchema) -> list[str]:
    """Target columns whose expressions read only columns the source relation has."""
    have = {c.name for c in relation.columns}
    return [name for name, expr in route.table.columns.items() if expression_columns(expr) <= have]


def _failed(failure: QueryFailure) -> ExprCheck:
    return ExprCheck(error=failure.message, sqlstate=failure.sqlstate)


def _plan_source_expressions(conn: Connection[Any], route: Route, relation: RelationSchema,
                             dsn: str) -> dict[RouteColumn, ExprCheck]:
    """Plan the route's projection (backfill's own SELECT) with LIMIT 0; per column where it fails."""
    names = _readable(route, relation)
    ident = (route.service.name, route.target_schema, route.target_table)
    types = plan_probes.projection_types(conn, route, relation, names, dsn) if names else []
    raw: dict[str, tuple[int, int] | ExprCheck] = {}
    if not isinstance(types, QueryFailure):
        raw.update(zip(names, types, strict=True))
    else:
        for name in names:  # find which expressions fail, each with its own message
            one = plan_probes.projection_types(conn, route, relation, [name], dsn)
            if isinstance(one, QueryFailure):
                raw[name] = _failed(one)
            else:
                raw[name] = one[0] if one else ExprCheck(error="no result", sqlstate=None)
    resolved = inspect.resolve_types(conn, [v for v in raw.values() if isinstance(v, tuple)])
    return {(*ident, name): (v if isinstance(v, ExprCheck) else ExprCheck(result=resolved.get(v)))
            for name, v in raw.items()}


def _plan_filter(conn: Connection[Any], route: Route, relation: RelationSchema, dsn: str) -> ExprCheck:
    """Plan the route's row filter in the source: its result type, or why PostgreSQL refused it."""
    if route.table.filter_columns() - {c.name for c in relation.columns}:
        return ExprCheck()  # a column it reads is missing: reported as such
    found = plan_probes.filter_type(conn, route, relation, dsn)
    if isinstance(found, QueryFailure):
        return _failed(found)
    return ExprCheck(result=inspect.resolve_types(conn, found).get(found[0]))


def _slot_facts(conn: Connection[Any], slot: str) -> SlotFacts:
    try:
        info = slot_info(conn, slot)
        if info is not None:
            check_slot_usable(info, slot)
        return SlotFacts(exists=info is not None, active=bool(info and info.active))
    except (ConfigurationError, FatalError) as exc:
        return SlotFacts(exists=True, problem=str(exc))


def gather_source(conn: Connection[Any], topology: Topology, *, slot: str, publication: str,
                  dsn: str) -> SourceFacts:
    """Everything the rules need from the source database, read only."""
    _limit(conn)
    settings = inspect.replication_settings(conn)
    role = inspect.source_role(conn)
    slot_facts = _slot_facts(conn, slot)
    pub = inspect.publication(conn, publication)

    routed = topology.source_tables()
    schemas = sorted({topology.source_schema, *(s for s, _ in routed)})
    tables = inspect.tables(conn, schemas=schemas, detail=routed)
    relations: dict[tuple[str, str], RelationSchema] = {}
    results: dict[RouteColumn, ExprCheck] = {}
    writeback: dict[tuple[str, str], list[SourceColumn]] = {}
    for key in routed:
        if key in tables:
            relations[key] = relation_schema(conn, *key)
            writeback[key] = writeback_columns(conn, *key)
    filters: dict[tuple[str, str, str], ExprCheck] = {}
    for route in topology.routes():
        relation = relations.get((route.source_schema, route.source_table))
        if relation is not None:
            results.update(_plan_source_expressions(conn, route, relation, dsn))
            if route.table.where is not None:
                filters[(route.service.name, route.target_schema, route.target_table)] = _plan_filter(
                    conn, route, relation, dsn)
    return SourceFacts(
        wal_level=settings.wal_level, max_replication_slots=settings.max_replication_slots,
        replication_slots_used=settings.replication_slots_used, max_wal_senders=settings.max_wal_senders,
        wal_senders_used=settings.wal_senders_used, slot=slot_facts, role=role, publication=pub, tables=tables,
        relations=relations, results=results, writeback=writeback, filters=filters)


def _apply_columns(conn: Connection[Any], route: Route, table: TableFacts) -> dict[str, TargetColumn]:
    """The apply's target columns (with its casts), from the sink's own catalog read when the table is complete."""
    try:
        return {c.name: c for c in target_columns(conn, route)}
    except ConfigurationError:
        # Some column is missing, or a DEFAULT has no constant (reported by the rules): mirror the sink's rule
        # for the others, an explicit cast to user-defined types, none for built-ins.
        return {name: TargetColumn(name, None if col.type.builtin else col.type.display,
                                   default_meaning(route.table.columns[name], col))
                for name, col in table.columns.items() if name in route.table.columns}


def gather_target(conn: Connection[Any], service: str, routes: Sequence[Route],
                  relations: Mapping[tuple[str, str], RelationSchema], *, dsn: str) -> TargetFacts:
    """Everything the rules need from one service database, read only."""
    _limit(conn)
    role = inspect.target_role(conn, STATE_SCHEMA)
    tables = inspect.tables(conn, pairs=[(r.target_schema, r.target_table) for r in routes])
    results: dict[RouteColumn, ExprCheck] = {}
    for route in routes:
        table = tables.get((route.target_schema, route.target_table))
        relation = relations.get((route.source_schema, route.source_table))
        if table is None or relation is None:
            continue
        apply_cols = _apply_columns(conn, route, table)
        for name in _readable(route, relation):
            if name not in apply_cols:
                continue
            failure = plan_probes.explain_apply(conn, route, apply_cols[name], relation, dsn)
            if failure is not None:
                results[(service, route.target_schema, route.target_table, name)] = _failed(failure)
    return TargetFacts(role=role, tables=tables, results=results)


def _read(dsn: str, what: str, origin: str, read: Callable[[Connection[Any]], _Facts]) -> _Facts | Unreachable:
    """`read` on a fresh session of the plan's own, or why the database could not be read (`origin`: where
    the operator sets its DSN, `splitter.core.dsn.dsn_origin`)."""
    facts = inspect.read_database(dsn, what, read)
    if isinstance(facts, inspect.ReadFailure):
        return Unreachable(what + origin, mask_dsn(dsn), facts.message, facts.connected)
    return facts


def check_data(conn: Connection[Any], checks: Sequence[DataCheck],
               relations: Mapping[tuple[str, str], RelationSchema], *, dsn: str) -> list[DataViolations]:
    """Run each data check in the source: one aggregate query per target constraint, read only."""
    _limit(conn)
    return [plan_data.run_check(conn, check, relations[(check.route.source_schema, check.route.source_table)], dsn)
            for check in checks]


def gather_data(settings: Settings, source: SourceFacts | Unreachable,
                targets: Mapping[str, TargetFacts | Unreachable]) -> list[DataViolations] | Unreachable:
    """What the source's rows would violate of the targets' constraints, on a session of its own."""
    checks = data_checks(settings.topology, source, targets)
    if not checks or not isinstance(source, SourceFacts):
        return []
    return _read(settings.source_dsn, f"source database {settings.topology.source_database}",
                 dsn_origin(SOURCE_DATABASE),
                 partial(check_data, checks=checks, relations=source.relations, dsn=settings.source_dsn))


def gather(settings: Settings) -> tuple[SourceFacts | Unreachable, dict[str, TargetFacts | Unreachable]]:
    """The facts of the source and of every service database (the source first: targets need its relations)."""
    topology = settings.topology
    source = _read(settings.source_dsn, f"source database {topology.source_database}", dsn_origin(SOURCE_DATABASE),
                   partial(gather_source, topology=topology, slot=settings.slot,
                           publication=settings.publication, dsn=settings.source_dsn))
    relations = source.relations if isinstance(source, SourceFacts) else {}

    targets: dict[str, TargetFacts | Unreachable] = {}
    for service in topology.services:
        dsn = settings.target_dsn(service.name)
        targets[service.name] = _read(
            dsn, f"database {service.database} of service {service.name}", dsn_origin(service_database(service.name)),
            partial(gather_target, service=service.name, routes=topology.routes_for(service), relations=relations,
                    dsn=dsn))
    return source, targets


__all__ = ["check_data", "gather", "gather_data", "gather_source", "gather_target"]

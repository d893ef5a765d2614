"""The plan's rules: facts in, findings out, with nothing read and nothing written.

Owns: `collect_findings` and the rules behind it: the source's preflight (wal_level, slots, wal
senders, the role's rights, primary keys and replica identity, the publication), source tables no
service takes, each service database's preflight (the role's rights, table privileges), and each
route's columns (missing tables and columns, expressions PostgreSQL refused, lossy conversions,
NULLs into NOT NULL, unmapped columns, the key's unique index, uniqueness the source does not
enforce), with the data rules' findings (`data`: rows the targets' constraints would refuse) and the
ownership rules' (`ownership`: what an owner's reverse stream could not write back) and those of a route's
row filter, `DEFAULT`s and partitioned source (`sql_rules`).
Each finding names service, table, column and the topology line.
Must not: read a database or print: every rule is a function of the facts (unit-tested on facts
written by hand in tests/unit/test_plan_rules.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from connectors.pg.inspect import TABLE_PRIVILEGES, SourceRole, TableFacts
from connectors.pg.plan_data import DataViolations
from connectors.pg.plan_probes import GENERATED_ALWAYS
from connectors.pg.state import STATE_SCHEMA
from splitter.core.envelope import ColumnSchema, RelationSchema
from splitter.ops.plan.collector import Collector
from splitter.ops.plan.conversions import conversion_findings
from splitter.ops.plan.data import data_findings, planned_expression, source_enforces
from splitter.ops.plan.facts import (
    ERROR,
    INFO,
    SEVERITY_RANK,
    WARNING,
    Finding,
    SourceFacts,
    TargetFacts,
    Unreachable,
    target_name,
)
from splitter.ops.plan.ownership import ownership_findings
from splitter.ops.plan.sql_rules import default_rules, filter_rules, partition_rules
from splitter.topology.expressions import expression_columns, may_be_null, split_qualified, uses_default
from splitter.topology.model import Route, Topology
from splitter.topology.sqlrender import check_route_against


def collect_findings(topology: Topology, source: SourceFacts | Unreachable,
                     targets: Mapping[str, TargetFacts | Unreachable], *,
                     slot: str = "splitter", publication: str = "splitter",
                     data: Sequence[DataViolations] | Unreachable = ()) -> list[Finding]:
    """Every finding for `topology` given what the databases said (and what checking the source's rows
    against the targets' constraints found, `data`); ERRORs first, then WARNINGs, INFOs."""
    out = Collector()
    out.findings += data_findings(data)
    if isinstance(source, Unreachable):
        out.add(ERROR, source.code, source.describe())
    else:
        _source_preflight(out, topology, source, slot, publication)
        _unrouted(out, topology, source)
        out.findings += ownership_findings(topology, source)
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
    return sorted(out.findings, key=lambda f: SEVERITY_RANK[f.severity])


def _source_preflight(out: Collector, topology: Topology, source: SourceFacts, slot: str,
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
        if table.row_key is None:
            # REPLICA IDENTITY FULL alone is not enough: a table without a key may hold the same row twice,
            # and the service's table could not tell which one a delete removes.
            out.add(ERROR, "no-primary-key",
                    f"source table {table.qualified} has no primary key (nor a REPLICA IDENTITY USING INDEX "
                    f"on a unique index of NOT NULL columns); splitter keys every change by one",
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


def _must_own(out: Collector, role: SourceRole, tables: Iterable[TableFacts], what: str) -> None:
    if role.superuser:
        return
    for table in tables:
        if not table.owned:
            out.add(ERROR, "not-table-owner",
                    f"source role {role.name!r} does not own {table.qualified}, so run cannot {what} it",
                    table=table.qualified)


def _unrouted(out: Collector, topology: Topology, source: SourceFacts) -> None:
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


def _target_preflight(out: Collector, service: str, routes: Sequence[Route], target: TargetFacts) -> None:
    role = target.role
    if not role.superuser:
        if not role.can_create and not role.state_schema_exists:
            out.add(ERROR, "no-create-schema",
                    f"role {role.name!r} lacks CREATE on the database of service {service}, and schema "
                    f"{STATE_SCHEMA} does not exist for the worker to use: create it owned by the role "
                    f"(`splitter grants` prints the statement) or grant CREATE", service=service)
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
        lacking = [p for p in TABLE_PRIVILEGES if p not in table.privileges]  # the apply needs all four
        if lacking:
            out.add(ERROR, "missing-privilege",
                    f"role {role.name!r} lacks {', '.join(lacking)} on {table.qualified}", route=route)


def _route_rules(out: Collector, route: Route, source: SourceFacts | None, target: TargetFacts | None) -> None:
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
    if route.table.where is not None and source is not None and src_table is not None:
        filter_rules(out, route, source, src_table)
    if src_table is not None:
        partition_rules(out, route, src_table)

    tgt_table = target.tables.get((route.target_schema, route.target_table)) if target else None
    if target is not None and tgt_table is None:
        out.add(ERROR, "target-table-missing",
                f"{route.describe()}: target table {target_name(route)} does not exist in database "
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
            if tgt_check.sqlstate == GENERATED_ALWAYS:  # its own value, or the insert's
                out.add(ERROR, "generated-always",
                        f"{column} cannot take the stream's values: {tgt_check.error}; make the service column "
                        f"GENERATED BY DEFAULT, or leave it out of the topology", route=route, column=column)
                continue
            out.add(ERROR, "incompatible-type" if incompatible else "expression-fails-in-target",
                    f"expression {expr!r} ({result}) cannot be stored in {column}"
                    f"{' ' + tcol.type.display if tcol else ''}: {tgt_check.error}", route=route, column=column)
            continue
        if tcol is None or src_table is None:
            continue
        tcol_where = f"{tgt_table.qualified}." if tgt_table else ""
        if default_rules(out, route, column, expr, tcol, f"{tcol_where}{column}"):
            continue
        read = planned_expression(expr, tcol)
        if src_check is not None and src_check.result is not None:
            for severity, code, message in conversion_findings(read, src_check.result, tcol.type, src_table):
                out.add(severity, code, f"{tcol_where}{column} ← {expr}: {message}", route=route, column=column)
        if tcol.not_null and may_be_null(read, src_table):
            out.add(ERROR, "not-null-from-nullable",
                    f"{tcol_where}{column} is NOT NULL but {expr!r} yields NULL where "
                    f"source {route.source_schema}.{route.source_table} has NULL (wrap it in coalesce(...)"
                    f"{', e.g. coalesce(..., DEFAULT) for its default' if tcol.default is not None else ''})",
                    route=route, column=column)
        elif tcol.default is not None and not uses_default(expr) and may_be_null(read, src_table):
            out.add(WARNING, "null-over-default",
                    f"{tcol_where}{column} has the default {tcol.default} but {expr!r} yields NULL where source "
                    f"{route.source_schema}.{route.source_table} has NULL, and NULL is written, not the default "
                    f"(write coalesce(..., DEFAULT) to write the target's default instead)",
                    route=route, column=column)

    if tgt_table is not None:
        _unmapped_target_columns(out, route, tgt_table)
        _key_rules(out, route, tgt_table)
        if src_table is not None:
            _unique_rules(out, route, src_table, tgt_table)


def _source_columns(out: Collector, route: Route, relation: RelationSchema) -> set[str]:
    """Columns reading source columns that do not exist; reported through sqlrender's own check."""
    columns: Mapping[str, ColumnSchema] = {c.name: c for c in relation.columns}
    bad = [name for name, expr in route.table.columns.items() if expression_columns(expr) - columns.keys()]
    filter_bad = bool(route.table.filter_columns() - columns.keys())
    problems = check_route_against(route, columns)
    prefix = f"{route.table.origin}: "
    for i, problem in enumerate(problems):
        text = problem[len(prefix):] if problem.startswith(prefix) else problem
        # check_route_against reports missing columns in declaration order, then the filter's, then the key check.
        if i < len(bad):
            out.add(ERROR, "source-column-missing", text, route=route, column=bad[i])
        elif i == len(bad) and filter_bad:
            out.add(ERROR, "filter-column-missing", text, route=route)
        else:
            out.add(ERROR, "key-outside-primary-key", text, route=route)
    return set(bad)


def _unmapped_target_columns(out: Collector, route: Route, table: TableFacts) -> None:
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


def _key_rules(out: Collector, route: Route, table: TableFacts) -> None:
    key = set(route.table.key)
    if any(i.plain and (i.primary or i.unique) and set(i.columns) == key for i in table.indexes):
        return
    candidates = [f"{i.name} ({', '.join(c or '<expr>' for c in i.columns)})"
                  for i in table.indexes if i.primary or i.unique]
    out.add(ERROR, "key-not-unique",
            f"key ({', '.join(route.table.key)}) matches no primary key or unique index of {table.qualified} "
            f"(it has: {', '.join(candidates) or 'none'}); the apply's ON CONFLICT needs one exactly on the key",
            route=route)


def _unique_rules(out: Collector, route: Route, source: TableFacts, target: TableFacts) -> None:
    for index in target.indexes:
        if not (index.primary or index.unique) or source_enforces(route, index, source):
            continue
        mapped = ", ".join(f"{c} ← {route.table.columns.get(c or '', '<not mapped>')}" for c in index.columns)
        out.add(WARNING, "unique-not-enforced-in-source",
                f"unique index {index.name} of {target.qualified} ({mapped}) is not enforced by any unique index of "
                f"source {source.qualified}: rows that duplicate it in the source will fail to apply",
                route=route, column=index.columns[0] if len(index.columns) == 1 else None)


__all__ = ["collect_findings", "target_name"]

"""The plan's data rules: which target constraints to check against the source's rows, and what the counts mean.

Owns: `data_checks` (facts in, `DataCheck`s out: every unique index of a target table that no unique
index of the source already guarantees, every NOT NULL column whose expression may yield NULL, every
string column its expression may overflow, every enum column its expression may miss; a constraint the
schemas already prove safe is not queried, so a plan on the shipped schemas runs one data query),
`source_enforces` (the one rule for "the source's unique indexes already guarantee this target index",
which the schema rules use too) and `data_findings` (what gathering found, as findings: an ERROR when
the copy stops on a refused row of the table, a WARNING when it sets such rows aside as dead letters:
the table's `on_error`, else its service's).
Must not: read a database (gather runs the checks through connectors.pg.plan_data) or print.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from connectors.pg.inspect import ColumnFacts, IndexFacts, TableFacts
from connectors.pg.plan_data import ENUM, LENGTH, NOT_NULL, UNIQUE, DataCheck, DataViolations
from splitter.core.errors import ConfigurationError
from splitter.ops.plan.conversions import length_at_risk
from splitter.ops.plan.facts import ERROR, WARNING, Finding, SourceFacts, TargetFacts, Unreachable, target_name
from splitter.topology.expressions import (
    default_value,
    expression_columns,
    may_be_null,
    plain_column,
    possible_values,
    uses_default,
    with_default,
)
from splitter.topology.model import Route, Topology, effective_on_error, on_error_said

_LIMITED_STRINGS = {"varchar", "bpchar"}  # `name` truncates silently instead of refusing


def default_meaning(expr: str, column: ColumnFacts | None) -> str | None:
    """What `DEFAULT` in `expr` stands for in the plan's probes of target column `column`: None when `expr` has
    no DEFAULT; NULL where the column is unknown or its default is no constant (`rules` reports that)."""
    if not uses_default(expr):
        return None
    if column is None:
        return "NULL"
    try:
        return default_value(column.default, filled_by=column.filled_by)
    except ConfigurationError:
        return "NULL"


def planned_expression(expr: str, column: ColumnFacts | None) -> str:
    """`expr` as the plan reads it: with the target column's default in place of `DEFAULT`."""
    meaning = default_meaning(expr, column)
    return expr if meaning is None else with_default(expr, meaning)


def source_enforces(route: Route, index: IndexFacts, source: TableFacts) -> bool:
    """Whether a unique index of the source guarantees the target's unique `index` for this route.

    Only when every indexed column is a plain source column and those columns cover a source unique index:
    an expression, a constant or a column the database fills may map distinct rows to one value.
    """
    read: set[str] = set()
    for col in index.columns:
        expr = route.table.columns.get(col) if col else None
        name = plain_column(expr) if expr is not None else None
        if name is None:
            return False
        read.add(name)
    return any(set(i.columns) <= read for i in source.indexes if (i.primary or i.unique) and i.plain)


def _checkable(route: Route, source: SourceFacts, target: TargetFacts, columns: set[str]) -> set[str]:
    """Target columns of the route whose expression the source and the target both accepted."""
    out = set()
    for name, expr in route.table.columns.items():
        ident = (route.service.name, route.target_schema, route.target_table, name)
        src, tgt = source.results.get(ident), target.results.get(ident)
        if expression_columns(expr) <= columns and src is not None and src.error is None and (
                tgt is None or tgt.error is None):
            out.add(name)
    return out


def _route_checks(route: Route, source: SourceFacts, target: TargetFacts) -> list[DataCheck]:
    src_key = (route.source_schema, route.source_table)
    src_table, relation = source.tables.get(src_key), source.relations.get(src_key)
    tgt_table = target.tables.get((route.target_schema, route.target_table))
    if src_table is None or relation is None or tgt_table is None or not relation.key_columns:
        return []
    ok = _checkable(route, source, target, {c.name for c in relation.columns})
    checks = []
    for index in tgt_table.indexes:
        if (index.primary or index.unique) and index.plain and all(c in ok for c in index.columns) \
                and not source_enforces(route, index, src_table):
            names = tuple(str(c) for c in index.columns)
            casts = tuple(tgt_table.columns[c].type.display if tgt_table.columns[c].type.builtin else None
                          for c in names)
            checks.append(DataCheck(UNIQUE, route, names, index.name, casts=casts, defaults=tuple(
                default_meaning(route.table.columns[c], tgt_table.columns[c]) for c in names)))
    for name, declared in route.table.columns.items():
        tcol = tgt_table.columns.get(name)
        if tcol is None or name not in ok:
            continue
        expr = planned_expression(declared, tcol)
        defaults = (default_meaning(declared, tcol),)
        if tcol.not_null and may_be_null(expr, src_table) is not False:
            checks.append(DataCheck(NOT_NULL, route, (name,), "NOT NULL", defaults=defaults))
        result = source.results[(route.service.name, route.target_schema, route.target_table, name)].result
        if tcol.type.name in _LIMITED_STRINGS and result is not None and result.category in ("S", "E"):
            limit = length_at_risk(expr, result, tcol.type, src_table)
            if limit is not None:
                checks.append(DataCheck(LENGTH, route, (name,), tcol.type.display, limit=limit, defaults=defaults))
        labels = tcol.type.enum_labels
        if labels is not None:
            values = possible_values(expr, src_table)
            if values is None or not values <= set(labels):
                checks.append(DataCheck(ENUM, route, (name,), tcol.type.display, labels=labels, defaults=defaults))
    return checks


def data_checks(topology: Topology, source: SourceFacts | Unreachable,
                targets: Mapping[str, TargetFacts | Unreachable]) -> list[DataCheck]:
    """The constraints worth a query against the source's rows: those the schemas do not prove safe."""
    if not isinstance(source, SourceFacts):
        return []
    checks: list[DataCheck] = []
    for route in topology.routes():
        target = targets.get(route.service.name)
        if isinstance(target, TargetFacts):
            checks += _route_checks(route, source, target)
    return checks


def _key(columns: Sequence[str], values: Sequence[str | None]) -> str:
    return f"({', '.join(columns)})=({', '.join('NULL' if v is None else v for v in values)})"


def _what(found: DataViolations) -> str:
    check = found.check
    table = f"{target_name(check.route)}.{check.columns[0]}"
    expr = check.route.table.columns.get(check.columns[0], "")
    if check.kind == NOT_NULL:
        return f"{table} is NOT NULL but {expr!r} yields NULL for {found.rows} source row(s)"
    if check.kind == LENGTH:
        return f"{table} is {check.constraint} but {expr!r} is longer than {check.limit} for {found.rows} source row(s)"
    if check.kind == ENUM:
        return (f"{table} is enum {check.constraint} but {expr!r} yields a value that is none of its labels "
                f"({', '.join(check.labels)}) for {found.rows} source row(s)")
    mapped = ", ".join(f"{c} ← {check.route.table.columns[c]}" for c in check.columns)
    return (f"unique index {check.constraint} of {target_name(check.route)} ({mapped}) is violated by "
            f"{found.rows} source row(s): {found.groups} value(s) occur more than once")


def _first(found: DataViolations) -> str:
    keys = found.key_columns
    if found.check.kind == UNIQUE:
        shown = [f"{_key(found.check.columns, value)} in {_key(keys, lo)} and {_key(keys, hi)}"
                 for value, (lo, hi) in zip(found.values, found.first, strict=True)]
        return "first: " + "; ".join(shown) + ("; ..." if found.groups > len(shown) else "")
    shown = [_key(keys, k) for (k,) in found.first]
    return "first: " + ", ".join(shown) + (", ..." if found.rows > len(shown) else "")


_CODES = {UNIQUE: "data-duplicates", NOT_NULL: "data-null", LENGTH: "data-too-long", ENUM: "data-not-in-enum"}


def data_findings(results: Sequence[DataViolations] | Unreachable) -> list[Finding]:
    """Each check that found rows the target would refuse, or could not run."""
    if isinstance(results, Unreachable):
        return [Finding(WARNING, "data-check-failed", f"the data was not checked: {results.describe()}")]
    out = []
    for found in results:
        check = found.check
        route = check.route
        where = {"service": route.service.name, "table": target_name(route), "origin": str(route.table.origin),
                 "column": check.columns[0] if len(check.columns) == 1 else None}
        source = f"{route.source_schema}.{route.source_table}"
        if found.failure is not None:
            out.append(Finding(WARNING, "data-check-failed",
                               f"could not check {check.constraint} against the rows of {source}: "
                               f"{found.failure.message}", **where))
            continue
        if not found.rows:
            continue
        said, change = on_error_said(route.service, route.table, "dead_letter")
        if effective_on_error(route.service, route.table) == "dead_letter":
            severity, outcome = WARNING, ("the initial copy sets them aside as dead letters of service "
                                          f"{route.service.name} ({said}) and copies the rest")
        else:
            severity, outcome = ERROR, (f"the initial copy of service {route.service.name} would stop at the "
                                        f"first ({said}): fix them in {source}, or {change} to set them aside")
        out.append(Finding(severity, _CODES[check.kind], f"{_what(found)} ({source} {_first(found)}); {outcome}",
                           **where))
    return out


__all__ = ["data_checks", "data_findings", "source_enforces"]

"""The plan's rules about what a route's SQL says beyond its columns' types: its row filter (`where=`), the
`DEFAULT`s in its expressions, and a partitioned source whose partitions' TRUNCATEs are not sent.

Owns: `filter_rules`, `default_rules`, `partition_rules`.  Must not: read a database (every rule is a
function of the facts `gather` read).
"""

from __future__ import annotations

from connectors.pg.inspect import ColumnFacts, TableFacts
from splitter.core.errors import ConfigurationError
from splitter.ops.plan.collector import Collector
from splitter.ops.plan.facts import ERROR, WARNING, SourceFacts
from splitter.topology.expressions import default_value, uses_default
from splitter.topology.model import Route

_BOOLEAN_OID = 16


def filter_rules(out: Collector, route: Route, source: SourceFacts, src_table: TableFacts) -> None:
    """The route's row filter: it must plan as a boolean in the source; and updates it can judge only whole."""
    where = route.table.where
    check = source.filters.get((route.service.name, route.target_schema, route.target_table))
    if check is not None and check.error is not None and check.sqlstate != "42501":
        out.add(ERROR, "filter-fails", f"row filter {where!r} fails in the source: {check.error}", route=route)
    elif check is not None and check.result is not None and check.result.oid != _BOOLEAN_OID:
        out.add(ERROR, "filter-not-boolean", f"row filter {where!r} yields {check.result.display}, not boolean",
                route=route)
    if src_table.replica_identity == "f":
        return  # every update carries every column
    toastable = {c for c, col in src_table.columns.items() if col.storage in ("x", "e")}
    toasted = sorted(route.table.source_columns_read() & toastable)
    filtered = route.table.filter_columns()
    fix = f"ALTER TABLE {src_table.qualified} REPLICA IDENTITY FULL makes every update whole"
    if filtered & toastable and filtered - toastable:
        # A warning, not an error: a value is stored out of line only once it is large (about 2 kB).
        out.add(WARNING, "filter-needs-full-identity",
                f"row filter {where!r} reads {', '.join(sorted(filtered & toastable))}, a large value of which an "
                f"update that leaves it unchanged does not send, beside columns it does send: such an update "
                f"cannot be judged and stops the worker; {fix}", route=route)
    elif toasted:
        out.add(WARNING, "filter-needs-full-identity",
                f"row filter {where!r}: an update that leaves a large value of {', '.join(toasted)} unchanged does "
                f"not carry it, so a row such an update moves into the filter cannot be written and the worker "
                f"stops; {fix}", route=route)


def default_rules(out: Collector, route: Route, column: str, expr: str, tcol: ColumnFacts, where: str) -> bool:
    """`DEFAULT` in `expr` where no constant stands for it (reported; True: the column's other rules are moot)."""
    if not uses_default(expr):
        return False
    try:
        default_value(tcol.default, filled_by=tcol.filled_by)
    except ConfigurationError as exc:
        out.add(ERROR, "default-not-constant", f"{where}: expression {expr!r} says DEFAULT, but {exc}",
                route=route, column=column)
        return True
    return False


def partition_rules(out: Collector, route: Route, src_table: TableFacts) -> None:
    """A partitioned source: PostgreSQL sends no TRUNCATE of one partition when it publishes through the root."""
    if src_table.partitioned:
        out.add(WARNING, "partition-truncate-not-sent",
                f"{src_table.qualified} is partitioned and published through its root: a TRUNCATE of the whole "
                f"table reaches {route.describe()}, a TRUNCATE of one partition alone does not (PostgreSQL sends "
                f"none); delete such rows instead, or backfill after it", route=route)

"""The schema-change policy of a worker: go on through a source schema change unless it breaks the topology.

Owns: which source columns the topology reads per source table, the relation shapes the records carry (each
checked once: `read_relation` refuses a header whose names could not reach SQL as names), the last shape seen
of each table, and the decision to stop (FatalError, with what to do) when a column the topology reads is gone
or changed type.  Must not: read anything but the relation shapes it is shown (they come with the records).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Sequence

from splitter.core.envelope import RelationSchema
from splitter.core.errors import FatalError, MalformedMessageError
from splitter.topology.expressions import expression_columns
from splitter.topology.model import Route
from splitter.topology.sqlrender import stage_columns
from splitter.topology.type_names import column_name_problem, shown, type_name_problem


@functools.lru_cache(maxsize=256)  # a header is a table's shape: the backfill window meets it on every change
def read_relation(qualified: str, header: bytes) -> RelationSchema:
    """The relation a schema header describes; MalformedMessageError unless each column has a name that can be
    one and a type as format_type prints it.  Anyone who can produce to the topic writes this header, and its
    types reach the apply statements as SQL text."""
    relation = RelationSchema.from_header(qualified, header)
    # Every column is also a column of the apply's staging table, beside its own bookkeeping columns.
    staged = Counter(stage_columns(relation))
    for c in relation.columns:
        problem = (column_name_problem(c.name) or ("a name used twice (by the table or its staging table)"
                                                   if staged[c.name] > 1 else None)
                   or type_name_problem(c.sql_type))
        if problem is not None:
            raise MalformedMessageError(f"schema header of {shown(qualified)}: column {shown(c.name)} of type "
                                        f"{shown(c.sql_type)}: {problem}")
    return relation


def columns_read(routes: Sequence[Route]) -> dict[str, set[str]]:
    """Source columns the topology reads, per source table (`schema.table`)."""
    reads: dict[str, set[str]] = {}
    for r in routes:
        cols = reads.setdefault(f"{r.source_schema}.{r.source_table}", set())
        for expr in r.table.columns.values():
            cols |= expression_columns(expr)
    return reads


class SchemaPolicy:
    """Checks each new source relation shape against the columns the topology reads."""

    def __init__(self, service: str, routes: Sequence[Route]) -> None:
        self._service = service
        self._reads = columns_read(routes)
        self._last_shape: dict[str, RelationSchema] = {}
        self._relations: dict[bytes, RelationSchema] = {}  # by schema header: each shape is checked once

    def relation(self, table: bytes, header: bytes | None, offset: int) -> RelationSchema:
        """The source relation a row record's schema header describes, checked when first seen (at `offset`)."""
        if header is None:
            raise MalformedMessageError(f"row record at offset {offset} has no schema header")
        relation = self._relations.get(header)
        if relation is None:
            relation = read_relation(table.decode(), header)
            self.check(relation, offset)
            self._relations[header] = relation
        return relation

    def set_routes(self, routes: Sequence[Route]) -> None:
        """Take a reloaded topology's routes."""
        self._reads = columns_read(routes)

    def check(self, relation: RelationSchema, offset: int) -> None:
        """Go on unless a column the topology reads is gone or changed type (first seen at log `offset`)."""
        name = relation.qualified
        types = {c.name: c.sql_type for c in relation.columns}
        missing = sorted(self._reads.get(name, set()) - types.keys())
        if missing:
            raise FatalError(
                f"service {self._service}: source table {name} no longer has column(s) {', '.join(missing)} "
                f"(dropped or renamed; first seen at log offset {offset}), which topology.py reads. Nothing was "
                f"applied from that change on. Update topology.py for the new shape and restart this worker")
        previous = self._last_shape.get(name)
        if previous is not None:
            before = {c.name: c.sql_type for c in previous.columns}
            changed = sorted(c for c in self._reads.get(name, set())
                             if c in before and before[c] != types[c])
            if changed:
                details = ", ".join(f"{c} {before[c]} -> {types[c]}" for c in changed)
                raise FatalError(
                    f"service {self._service}: source table {name} changed the type of {details} (at log offset "
                    f"{offset}), which topology.py reads. Check the expressions and the target column types, then "
                    f"restart this worker")
        self._last_shape[name] = relation

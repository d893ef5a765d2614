"""The schema-change policy of a worker: go on through a source schema change unless it breaks the topology.

Owns: which source columns the topology reads per source table, the relation shapes the records carry (each
checked once: `read_relation` refuses a header whose names could not reach SQL as names), the last shape seen
of each table, and the decision to stop (`SchemaChangeError`, with what to do) when a column the topology
reads is gone or changed type, unless the new shape is one the operator acknowledged by restarting the worker
after it stopped there; and each table's shape at the read position and at the checkpoint, which the worker
stores with the checkpoint and starts from (`connectors.pg.state.source_shapes`).  Must not: read anything
but the relation shapes it is shown (they come with the records, or were stored by an earlier run).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Collection, Mapping, Sequence

from splitter.core.envelope import RelationSchema
from splitter.core.errors import FatalError, MalformedMessageError
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


class SchemaChangeError(FatalError):
    """A source schema change the topology's reading cannot go through.  `shape` is the new schema header when
    restarting the worker may take it (a changed type: the operator checks the expressions and the target's
    types first), None when topology.py itself must change (a column it reads is gone)."""

    def __init__(self, message: str, table: str, offset: int, shape: bytes | None) -> None:
        super().__init__(message)
        self.table, self.offset, self.shape = table, offset, shape


def columns_read(routes: Sequence[Route]) -> dict[str, set[str]]:
    """Source columns the topology reads, per source table (`schema.table`): its expressions' and row filters'."""
    reads: dict[str, set[str]] = {}
    for r in routes:
        reads.setdefault(f"{r.source_schema}.{r.source_table}", set()).update(r.table.source_columns_read())
    return reads


class SchemaPolicy:
    """Checks each new source relation shape against the columns the topology reads, and follows each table's
    shape through the log, so that the shape at a checkpoint can be stored with it (`shapes_through`) and be
    the next start's baseline (`start`): a type change the worker was not running for is still seen."""

    def __init__(self, service: str, routes: Sequence[Route]) -> None:
        self._service = service
        self._reads = columns_read(routes)
        self._relations: dict[bytes, RelationSchema] = {}  # by schema header: each shape is checked once
        self._current: dict[str, RelationSchema] = {}  # each table's shape at the read position
        self._committed: dict[str, RelationSchema] = {}  # ... at the checkpoint
        self._moved: list[tuple[int, str, bytes]] = []  # (offset, table, header) where a shape began, unstored
        self._acknowledged: frozenset[tuple[str, bytes]] = frozenset()  # (table, new shape) a restart accepted
        self._judged_through = -1  # changes first seen at or before this offset were judged in this run

    def start(self, stored: Mapping[str, bytes], acknowledged: Collection[tuple[str, bytes]]) -> None:
        """Begin at a checkpoint: `stored` are the tables' shapes there (schema headers, by table), kept with
        it; `acknowledged` the new shapes the worker stopped at before this start: restarting it after such a
        stop is the operator's word that the change may go through."""
        self._committed = {table: read_relation(table, header) for table, header in stored.items()}
        self._current = dict(self._committed)
        self._acknowledged = frozenset(acknowledged)
        self._moved = []

    def relation(self, table: bytes, header: bytes | None, offset: int) -> RelationSchema:
        """The source relation a row record's schema header describes, checked when first seen (at `offset`)."""
        if header is None:
            raise MalformedMessageError(f"row record at offset {offset} has no schema header")
        relation = self._relations.get(header)
        if relation is None:
            relation = read_relation(table.decode(), header)
            if offset > self._judged_through:
                self.check(relation, offset, header)
            self._relations[header] = relation
        name = relation.qualified
        current = self._current.get(name)
        if current is not relation and current != relation:
            self._current[name] = relation
            self._moved.append((offset, name, header))
        return relation

    def shapes_through(self, offset: int) -> dict[str, tuple[int, bytes]]:
        """The shapes that began at or before log `offset` and are not stored yet, as table -> (the offset it
        began at, its schema header), the last of each table: what a checkpoint at `offset` stores with it."""
        return {table: (at, header) for at, table, header in self._moved if at <= offset}

    def committed(self, offset: int) -> None:
        """A checkpoint at `offset` was stored with `shapes_through(offset)`."""
        for at, table, header in self._moved:
            if at <= offset:
                self._committed[table] = read_relation(table, header)
        self._moved = [m for m in self._moved if m[0] > offset]

    def rewound(self, read_through: int) -> None:
        """Reading goes back to the checkpoint (a retry or a replay): the shapes are those stored with it, and
        what was read up to `read_through` was judged already (a replay goes back through shapes the log
        held before, which are no change to stop at)."""
        self._judged_through = max(self._judged_through, read_through)
        self._current = dict(self._committed)
        self._moved = []

    def set_routes(self, routes: Sequence[Route]) -> None:
        """Take a reloaded topology's routes."""
        self._reads = columns_read(routes)

    def check(self, relation: RelationSchema, offset: int, header: bytes | None = None) -> None:
        """Go on unless a column the topology reads is gone or changed type since the table's shape at the read
        position (first seen at log `offset`, with schema header `header`), or the change is one `start` was
        told was acknowledged."""
        name = relation.qualified
        types = {c.name: c.sql_type for c in relation.columns}
        missing = sorted(self._reads.get(name, set()) - types.keys())
        if missing:
            raise SchemaChangeError(
                f"service {self._service}: source table {name} no longer has column(s) {', '.join(missing)} "
                f"(dropped or renamed; first seen at log offset {offset}), which topology.py reads. Nothing was "
                f"applied from that change on. Update topology.py for the new shape and restart this worker",
                name, offset, None)
        previous = self._current.get(name)
        if previous is not None:
            before = {c.name: c.sql_type for c in previous.columns}
            changed = sorted(c for c in self._reads.get(name, set())
                             if c in before and before[c] != types[c])
            if changed and (header is None or (name, header) not in self._acknowledged):
                details = ", ".join(f"{c} {before[c]} -> {types[c]}" for c in changed)
                raise SchemaChangeError(
                    f"service {self._service}: source table {name} changed the type of {details} (at log offset "
                    f"{offset}), which topology.py reads. Nothing was applied from that transaction on. Check the "
                    f"expressions and the target column types, then restart this worker: it then takes this "
                    f"change", name, offset, header)

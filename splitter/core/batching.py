"""Collapsing a run of complete source transactions into the fewest set-based writes.

Owns: turning an ordered list of row changes into, per source table, the keys to delete, the
full rows to upsert, and the partial rows to update (updates whose unchanged TOASTed columns are
unknown), such that applying deletes, then partial updates, then upserts gives the same final
state as applying every change one by one.  Where no such order exists (a TRUNCATE, a schema
change, a key moved into a place another pending change still needs) the batch is cut into
ordered segments.  Also the two fallbacks for a target that refuses such an order (a unique index
other than the key, when values move between rows): the steps of each source transaction on its own
(`by_transaction`), and the steps that write the rows of some tables as delete-then-insert (`replacing`).
Must not: touch a database or know about services (a worker feeds it the changes of its own tables only).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field

from splitter.core.envelope import RelationSchema, Row, RowChange
from splitter.core.errors import MalformedMessageError

Key = tuple[str | None, ...]


@dataclass(slots=True)
class PartialRow:
    """An update whose `unchanged` columns are not known here: they keep their value in the target.

    `values` has every other column; `db_key` is where the row is in the target now (its source key
    before the batch), which differs from the new key when the update moved the row.
    """

    values: Row
    unchanged: frozenset[str]
    db_key: Key


@dataclass(slots=True)
class TableChanges:
    """The collapsed changes of one source table within one segment."""

    relation: RelationSchema
    deletes: dict[Key, None] = field(default_factory=dict)
    full: dict[Key, Row] = field(default_factory=dict)
    partial: dict[Key, PartialRow] = field(default_factory=dict)
    # db_key -> the pending key whose partial row lives there in the target
    moved_from: dict[Key, Key] = field(default_factory=dict)

    def is_empty(self) -> bool:
        return not (self.deletes or self.full or self.partial)


@dataclass(frozen=True, slots=True)
class Truncate:
    """TRUNCATE of these source tables: every target table fed from them is emptied here."""

    tables: tuple[str, ...]


@dataclass(slots=True)
class Segment:
    tables: dict[str, TableChanges] = field(default_factory=dict)

    def is_empty(self) -> bool:
        return all(t.is_empty() for t in self.tables.values())


Step = Segment | Truncate


class _Cut(Exception):
    """This change cannot join the current segment; start a new one and apply it there."""


class Batch:
    """Accumulates the changes of complete transactions; `steps()` gives what to apply, in order."""

    def __init__(self) -> None:
        self._steps: list[Step] = [Segment()]
        self.changes = 0

    def add(self, change: RowChange, relation: RelationSchema) -> None:
        self.changes += 1
        if change.op == "t":
            self._steps.append(Truncate((change.table,)))
            self._steps.append(Segment())
            return
        segment = self._steps[-1]
        assert isinstance(segment, Segment)
        try:
            _apply(segment, change, relation)
        except _Cut:
            fresh = Segment()
            self._steps.append(fresh)
            _apply(fresh, change, relation)

    def steps(self) -> list[Step]:
        return [s for s in self._steps if not (isinstance(s, Segment) and s.is_empty())]

    def __len__(self) -> int:
        return self.changes


def _key(row: Row, columns: tuple[str, ...], what: str) -> Key:
    try:
        return tuple(row[c] for c in columns)
    except KeyError as exc:
        raise MalformedMessageError(f"{what} image lacks key column {exc.args[0]!r}") from exc


def _table(segment: Segment, change: RowChange, relation: RelationSchema) -> TableChanges:
    table = segment.tables.get(change.table)
    if table is None:
        table = segment.tables[change.table] = TableChanges(relation)
    elif table.relation != relation:
        # The source table changed shape: rows of both shapes cannot share one staging statement.
        raise _Cut
    return table


def _must_delete(table: TableChanges, key: Key) -> None:
    if key in table.moved_from:
        # A pending partial update still has to move the target row away from `key` first.
        raise _Cut
    table.deletes[key] = None


def _drop_pending(table: TableChanges, key: Key) -> PartialRow | Row | None:
    """Remove and return what is pending at `key`."""
    if key in table.full:
        return table.full.pop(key)
    partial = table.partial.pop(key, None)
    if partial is not None:
        del table.moved_from[partial.db_key]
    return partial


def _apply(segment: Segment, change: RowChange, relation: RelationSchema) -> None:
    table = _table(segment, change, relation)
    key_cols = relation.key_columns
    if not key_cols:
        raise MalformedMessageError(f"{change.table} has no key columns in its schema header")
    if change.op in ("c", "r"):
        assert change.after is not None
        new_key = _key(change.after, key_cols, "insert")
        if new_key in table.full or new_key in table.partial:
            raise _Cut  # only possible after a cut-worthy sequence; keep it exact
        table.full[new_key] = change.after
        return
    if change.op == "d":
        assert change.before is not None
        old_key = _key(change.before, key_cols, "delete")
        # Check before mutating so a cut leaves this segment untouched.
        pending_partial = table.partial.get(old_key)
        target = pending_partial.db_key if pending_partial is not None else old_key
        if pending_partial is None and target in table.moved_from:
            raise _Cut
        _drop_pending(table, old_key)
        table.deletes[target] = None
        return
    # update
    assert change.after is not None
    new_key = _key(change.after, key_cols, "update")
    old_key = _key(change.before, key_cols, "update old") if change.before is not None else new_key
    unchanged = frozenset(change.unchanged_toast)
    prev_full = table.full.get(old_key)
    prev_partial = table.partial.get(old_key)
    if old_key != new_key and (new_key in table.full or new_key in table.partial or new_key in table.moved_from):
        raise _Cut
    if unchanged and change.before is not None and all(c in change.before for c in unchanged):
        # REPLICA IDENTITY FULL sent the old row: unchanged values are the old ones.
        filled = dict(change.after)
        for c in unchanged:
            filled[c] = change.before[c]
        after, unchanged = filled, frozenset()
    else:
        after = change.after
    if prev_full is not None:
        merged = dict(prev_full)
        merged.update(after)
        if old_key != new_key:
            _must_delete(table, old_key)
        _drop_pending(table, old_key)
        table.full[new_key] = merged
        return
    if prev_partial is not None:
        values = dict(prev_partial.values)
        values.update(after)
        # A column this update left unchanged keeps whatever `values` already knew of it.
        still_unknown = prev_partial.unchanged - after.keys()
        _drop_pending(table, old_key)
        if not still_unknown:
            if prev_partial.db_key != new_key:
                _must_delete(table, prev_partial.db_key)
            table.full[new_key] = values
        else:
            table.partial[new_key] = PartialRow(values, frozenset(still_unknown), prev_partial.db_key)
            table.moved_from[prev_partial.db_key] = new_key
        return
    if unchanged:
        if old_key in table.moved_from:
            raise _Cut
        table.partial[new_key] = PartialRow(dict(after), unchanged, old_key)
        table.moved_from[old_key] = new_key
        return
    if old_key != new_key:
        _must_delete(table, old_key)
    table.full[new_key] = dict(after)


def by_transaction(changes: Iterable[tuple[RowChange, RelationSchema]]) -> list[tuple[int, list[Step]]]:
    """(commit LSN, steps) of each run of changes with one commit LSN, in the order given.

    Each source transaction collapsed on its own: applied one after the other, the target passes through
    every state the source committed, where the collapse of several transactions ordered each row by its
    last change (a value one row gives up in a later transaction may be taken by another row first).
    """
    runs: list[tuple[int, Batch]] = []
    for change, relation in changes:
        if not runs or runs[-1][0] != change.commit_lsn:
            runs.append((change.commit_lsn, Batch()))
        runs[-1][1].add(change, relation)
    return [(lsn, steps) for lsn, batch in runs if (steps := batch.steps())]


def replacing(steps: Sequence[Step], tables: Collection[str]) -> list[Step] | None:
    """`steps` with every row of `tables` they write deleted first, so that its upsert inserts it anew.

    For a transaction whose final rows a unique index accepts but no order of single-row updates reaches
    (two rows swapping a value): with every row it touches gone, the inserts meet only the rows it left
    alone.  None when such a row is only partly known (an update that left TOASTed columns out): deleting
    it would lose them.
    """
    out: list[Step] = []
    for step in steps:
        if isinstance(step, Truncate):
            out.append(step)
            continue
        segment = Segment()
        for name, table in step.tables.items():
            if name in tables:
                if table.partial:
                    return None
                table = TableChanges(table.relation, {**table.deletes, **dict.fromkeys(table.full)}, dict(table.full))
            segment.tables[name] = table
        out.append(segment)
    return out

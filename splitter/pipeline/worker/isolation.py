"""Which changes a worker applies row by row, in which mode, and applying them so.

Owns: the apply mode of each batch (a replay re-applies, over a newer state, what the database already
saw: see `splitter.pipeline.sink.apply_mode`), the rows parked behind an open dead letter, the source
transactions to read again row by row because the database rejected a row in them after their first
parts had gone, and the row-by-row apply itself: each change the database rejects (unless its table's
`on_error` stops the worker: the caller's `RefusedRow` decides), and each later change of a parked row,
becomes a dead letter, the rest are applied (a source transaction that applies whole is not taken
apart).  Must not: commit (`commit` does) or read a policy (`on_error` does).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from connectors.pg.sink_values import ApplyMode, Rejected
from connectors.pg.state.dead_letters import DeadLetter
from splitter.core.batching import by_transaction
from splitter.core.envelope import RelationSchema, RowChange
from splitter.core.errors import FatalError
from splitter.pipeline.sink import ApplySession, ParkedKeys, apply_mode, dead_letter, source_key
from splitter.pipeline.worker.source_order import apply_transaction
from splitter.pipeline.worker.state import Unit

#: Called with (offset, change, relation, rejection) for each change the database refused applied alone, before
#: it is set aside; raises (FatalError) when the change's table says stop (`on_error.Rejections.row`).
RefusedRow = Callable[[int, RowChange, RelationSchema, Rejected], None]


def _unit_key(unit: Unit) -> tuple[str, tuple[str | None, ...]]:
    _, change, relation = unit
    image = change.after if change.after is not None else (change.before or {})
    return change.table, tuple(image.get(c) for c in relation.key_columns)


class ApplyModes:
    """How each batch of one worker is applied."""

    def __init__(self, service: str) -> None:
        self._service = service
        # (table, source key) of rows with an open dead letter: their later changes wait behind it.
        self.parked: ParkedKeys = set()
        # The commit LSN the service database held when a replay was asked for: batches at or below it
        # re-apply what the database already saw, over a newer state.
        self.replay_until = 0
        # Transactions up to this commit LSN are applied row by row: the database rejected a row in them
        # after their first parts had gone (a large transaction), so they are read again, isolated.
        self.isolate_through = 0
        self._current = apply_mode(service, False)

    def for_batch(self, first_lsn: int) -> ApplyMode:
        """The mode of a batch (or part) whose first source transaction commits at `first_lsn`."""
        self._current = apply_mode(self._service, 0 < first_lsn <= self.replay_until)
        return self._current

    @property
    def current(self) -> ApplyMode:
        """The mode of the last batch or part applied: a dead-letter retry applies in it."""
        return self._current

    def isolated(self, first_lsn: int, units: Sequence[Unit]) -> bool:
        """Apply `units` row by row: a row was rejected there before, or a parked row has changes in them."""
        return (0 < first_lsn <= self.isolate_through
                or bool(self.parked and any(_unit_key(u) in self.parked for u in units)))


def apply_each(sink: ApplySession, units: Sequence[Unit], parked: ParkedKeys, mode: ApplyMode, refused: RefusedRow,
               service: str | None = None) -> list[DeadLetter]:
    """Apply changes one by one in the open transaction; the dead letters to store with its commit.

    A change to a row that already has an open dead letter (`parked`) is dead-lettered behind it
    unapplied, so a later retry replays that row's changes in their original order.  With `service`
    (units of whole source transactions), a transaction with no parked row is first tried whole
    (`source_order.apply_transaction`: a swap applies there, never one row at a time); only a transaction
    it refuses goes row by row.  `refused` decides each change the database refuses; when it raises, the
    open transaction is rolled back (nothing of the batch is committed) and the error goes on.
    """
    stored: list[DeadLetter] = []
    for run in _transactions(units):
        if service is not None and not any(_unit_key(u) in parked for u in run):
            ((commit_lsn, steps),) = by_transaction((change, relation) for _, change, relation in run)
            if apply_transaction(sink, service, commit_lsn, steps, mode) is None:
                continue
        try:
            stored += _one_by_one(sink, run, parked, mode, refused)
        except FatalError:
            sink.abandon()
            raise
    return stored


def _transactions(units: Sequence[Unit]) -> list[list[Unit]]:
    """Runs of units with one commit LSN, in order."""
    runs: list[list[Unit]] = []
    for unit in units:
        if not runs or runs[-1][-1][1].commit_lsn != unit[1].commit_lsn:
            runs.append([])
        runs[-1].append(unit)
    return runs


def _one_by_one(sink: ApplySession, units: Sequence[Unit], parked: ParkedKeys, mode: ApplyMode,
                refused: RefusedRow) -> list[DeadLetter]:
    stored: list[DeadLetter] = []
    for offset, change, relation in units:
        key = source_key(change, relation)
        if key is not None and (change.table, key) in parked:
            stored.append(dead_letter(offset, change, relation, None,
                                      "waits behind an earlier dead letter of the same row"))
            continue
        rejected = sink.apply_one(change, relation, mode, "applying changes one by one")
        if rejected is not None:
            refused(offset, change, relation, rejected)
            stored.append(dead_letter(offset, change, relation, rejected.sqlstate, rejected.message))
            if key is not None:
                parked.add((change.table, key))
    return stored

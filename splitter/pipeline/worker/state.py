"""What a worker holds in memory between reading a record and committing it, and what it tells observers.

Owns: `Unit` (a change with its log offset and relation), `OpenTxn` (the source transaction being
read), `Pending` (complete transactions and backfill chunks read but not committed: one future target
transaction) and `WorkerStats` (what status views and metrics read; one writer thread).  Must not: decide
anything or do I/O; the jobs of the worker (`loop`, `commit`, `parts`, `window`, ...) fill and empty these.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from connectors.pg.sink_values import ChunkDone
from splitter.core.batching import Batch
from splitter.core.envelope import RelationSchema, RowChange

#: A change as the worker keeps it: (log offset it was read at, change, source relation).
Unit = tuple[int, RowChange, RelationSchema]


@dataclass(slots=True)
class OpenTxn:
    """A source transaction being read: its changes so far, until its commit record."""

    commit_lsn: int
    last_sequence: int
    first_offset: int  # where to read it again from (a hold, or a part the database rejected)
    changes: list[Unit] = field(default_factory=list)
    # Earlier changes already applied, uncommitted, in the sink's open transaction (a large transaction).
    applied_in_parts: int = 0


class Pending:
    """The batch in memory: what the next commit applies (complete transactions, backfill chunks)."""

    def __init__(self) -> None:
        self.batch = Batch()
        self.units: list[Unit] = []
        self.chunks: list[ChunkDone] = []
        self.transactions = 0  # source transactions and backfill chunks in it
        self.started = 0.0  # monotonic time its first transaction was added
        self.first_lsn = 0  # commit LSN of its first source transaction (0: it starts with a chunk)

    def add(self, unit: Unit) -> None:
        _, change, relation = unit
        self.batch.add(change, relation)
        self.units.append(unit)

    def add_transaction(self, commit_lsn: int, units: list[Unit]) -> None:
        """A complete source transaction (what of it was not applied in parts)."""
        if not self.transactions:
            self.started = time.monotonic()
            self.first_lsn = commit_lsn
        for unit in units:
            self.add(unit)
        self.transactions += 1


class WorkerStats:
    """What the status views and metrics read (one writer thread)."""

    def __init__(self) -> None:
        self.applied_lsn = 0
        self.applied_offset = -1
        self.applied_source_ts_ms = 0
        self.transactions_applied = 0
        self.rows_applied = 0
        self.batches = 0
        self.last_batch_rows = 0
        self.last_apply_seconds = 0.0
        self.discarded_partial_transactions = 0
        self.transactions_applied_in_parts = 0
        self.dead_lettered = 0
        self.retries_by_kind: dict[str, int] = {}

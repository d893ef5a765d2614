"""Large source transactions: applied in parts into one target transaction, committed with their commit record.

Owns: moving the changes read so far of a source transaction too large to hold in memory into the sink's
open transaction (uncommitted), whether that transaction holds such parts, and dropping them when the
transaction is read again.  Must not: commit (the transaction's commit record goes through `commit`
with the rest of its batch) or move the read position (the loop reads a rejected transaction again).
"""

from __future__ import annotations

import logging

from connectors.pg.state.dead_letters import DeadLetter
from splitter.core.batching import Batch
from splitter.core.errors import DataRejectedError
from splitter.pipeline.sink import ApplySession
from splitter.pipeline.worker.isolation import ApplyModes, apply_each
from splitter.pipeline.worker.on_error import Rejections
from splitter.pipeline.worker.state import OpenTxn

log = logging.getLogger(__name__)


class LargeTransactions:
    def __init__(self, service: str, sink: ApplySession, modes: ApplyModes, max_changes: int,
                 rejections: Rejections) -> None:
        self._service = service
        self._sink = sink
        self._modes = modes
        self.max_changes = max_changes
        self._rejections = rejections  # `on_error`: stop, or read the transaction again row by row
        # The sink's open transaction holds applied parts of a large source transaction.
        self.pending = False

    def due(self, open_txn: OpenTxn) -> bool:
        return len(open_txn.changes) >= self.max_changes

    def announce(self, open_txn: OpenTxn) -> None:
        log.info("service %s: transaction with commit LSN %X has over %d changes; applying it in parts in one "
                 "target transaction", self._service, open_txn.commit_lsn, self.max_changes)

    def apply(self, open_txn: OpenTxn, letters: list[DeadLetter]) -> bool:
        """Move the open transaction's changes so far into the sink's open transaction (uncommitted); dead
        letters of a part applied row by row go to `letters`.  False when the database rejected a row: every
        part went with the rollback, and the transaction must be read again, row by row (unless `on_error`
        stops the worker: every table of the service stops, or the refused row's table does).
        """
        mode = self._modes.for_batch(open_txn.commit_lsn)
        units = open_txn.changes
        self.pending = True
        try:
            if self._modes.isolated(open_txn.commit_lsn, units):
                letters.extend(apply_each(self._sink, units, self._modes.parked, mode, self._rejections.row))
            else:
                part = Batch()
                for _, change, relation in units:
                    part.add(change, relation)
                self._sink.apply(part.steps(), mode, "applying part of a large transaction")
        except DataRejectedError as exc:
            self._rejections.batch(exc, units)
            return False
        open_txn.applied_in_parts += len(units)
        open_txn.changes = []
        return True

    def settled(self) -> None:
        """The parts were committed, or rolled back by the sink: its open transaction holds none now."""
        self.pending = False

    def abandon(self) -> None:
        """Roll back the applied parts (the transaction will be read again)."""
        self._sink.abandon()
        self.pending = False

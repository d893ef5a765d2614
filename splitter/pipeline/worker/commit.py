"""THE commit order of a worker: the one place that says what is durable when, and in which order.

1. The target transaction: the batch's data, the checkpoint that covers it, the dead letters set aside,
   the backfill chunks' progress, the hold report and the ownership moves at the checkpoint's position,
   committed at once by the sink or not at all.  The
   checkpoint in the service database is the only truth about where to resume.
2. The copy of those dead letters to the dead-letter topic, only after they are committed (the topic may
   miss a copy, never hold one the table lacks).
3. The Kafka offset of the consumer group, last: for lag tools only, never read back.

Owns: that order, and the fallbacks when the database rejects a row of the batch: first, for a unique or
exclusion violation, the batch again one source transaction at a time (`source_order`: the collapse's
order of writes may be all that is wrong); then, for a row invalid in any order, `on_error` (stop, or
apply the batch again row by row, each refused row set aside or stopped at by its table's policy).
Must not: build batches, move the read position, or commit anything anywhere else (no other module
calls `commit`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from connectors.kafka.consumer import ChangeLogConsumer
from connectors.pg.sink_values import ApplyMode, CommitExtras
from connectors.pg.state.dead_letters import DeadLetter
from connectors.pg.state.ownership_moves import StoredMove
from connectors.pg.state.schema import Checkpoint
from splitter.core.errors import DataRejectedError
from splitter.pipeline.sink import ApplySession
from splitter.pipeline.worker.dead_letter_topic import DeadLetterTopic
from splitter.pipeline.worker.isolation import ApplyModes, apply_each
from splitter.pipeline.worker.on_error import Rejections
from splitter.pipeline.worker.source_order import apply_in_source_order, order_sensitive
from splitter.pipeline.worker.state import Pending, WorkerStats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AtCheckpoint:
    """What is recorded at the checkpoint's position besides the data: the ownership moves there, and the
    source tables' shapes that began by then (table -> (offset it began at, schema header))."""

    moves: Sequence[StoredMove] = ()
    shapes: Mapping[str, tuple[int, bytes]] = field(default_factory=dict)


class Committer:
    """Commits one batch at a time, in the order above."""

    def __init__(self, service: str, sink: ApplySession, consumer: ChangeLogConsumer, dlq: DeadLetterTopic,
                 modes: ApplyModes, stats: WorkerStats, rejections: Rejections) -> None:
        self._service = service
        self._sink = sink
        self._consumer = consumer
        self._dlq = dlq
        self._modes = modes
        self._stats = stats
        self._rejections = rejections  # `on_error`: stop, or go on row by row (each refused row's table decides)

    def commit(self, pending: Pending, checkpoint: Checkpoint, paused: tuple[int, int] | None,
               letters: Sequence[DeadLetter], parts_pending: bool,
               recorded: AtCheckpoint = AtCheckpoint()) -> list[DeadLetter] | None:
        """Commit `pending` (and the parts of a large transaction the sink holds, `parts_pending`) with
        `checkpoint`; the dead letters stored with it.  None when the database rejected a row after parts had
        gone: they went with the rollback, so the caller reads the transaction again, to apply it row by row.
        `paused` = (requested LSN, held LSN) reports in the same transaction that the worker now holds;
        `recorded`: what else is recorded at the checkpoint's position (ownership moves, source shapes).
        """
        sink = self._sink
        mode = self._modes.for_batch(pending.first_lsn)
        # 1. The target transaction.
        if self._modes.isolated(pending.first_lsn, pending.units):
            stored = self._commit_isolated(pending, checkpoint, letters, mode, recorded)
        else:
            try:
                sink.apply(pending.batch.steps(), mode, f"applying changes up to offset {checkpoint.offset}")
                sink.commit(checkpoint, _extras(pending, paused, letters, recorded),
                            "committing")
                stored = list(letters)
            except DataRejectedError as exc:
                if parts_pending:  # the refused row may be in a part applied before: which table is not known
                    self._rejections.batch(exc)
                    return None
                refused = (self._commit_in_source_order(pending, checkpoint, paused, letters, mode, recorded)
                           if order_sensitive(exc.sqlstate) else exc)
                if refused is None:
                    stored = list(letters)
                else:
                    self._rejections.batch(refused, pending.units)
                    log.warning("service %s: batch rejected (SQLSTATE %s); applying it row by row", self._service,
                                refused.sqlstate)
                    stored = self._commit_isolated(pending, checkpoint, letters, mode, recorded)
        # 2. The dead-letter copy.
        if stored:
            self._stats.dead_lettered += len(stored)
            self._dlq.publish(stored)
        # 3. The Kafka offset.
        self._consumer.commit(checkpoint.offset + 1)
        return stored

    def _commit_in_source_order(self, pending: Pending, checkpoint: Checkpoint, paused: tuple[int, int] | None,
                                letters: Sequence[DeadLetter], mode: ApplyMode,
                                recorded: AtCheckpoint) -> DataRejectedError | None:
        """Apply the refused batch again one source transaction at a time and commit it as the batch would have
        been; None when committed, else the rejection of a row that no order makes valid (rolled back)."""
        sink = self._sink
        log.info("service %s: batch refused by a unique or exclusion constraint; applying it again one source "
                 "transaction at a time", self._service)
        try:
            rejected = apply_in_source_order(sink, self._service, pending.units, mode)
        except Exception:
            sink.abandon()
            raise
        if rejected is not None:
            sink.abandon()
            return DataRejectedError(f"service {self._service}: applying changes up to offset {checkpoint.offset} "
                                     f"failed: {rejected.message}", rejected.sqlstate)
        try:
            sink.commit(checkpoint, _extras(pending, paused, letters, recorded),
                        "committing")
        except DataRejectedError as exc:  # a deferred constraint: the batch's final state is refused
            return exc
        return None

    def _commit_isolated(self, pending: Pending, checkpoint: Checkpoint, letters: Sequence[DeadLetter],
                         mode: ApplyMode, recorded: AtCheckpoint) -> list[DeadLetter]:
        """Apply the batch row by row and commit it with the letters set aside.

        No hold report goes with a batch applied row by row (it never did: `paused` is not passed here).
        """
        stored = [*letters, *apply_each(self._sink, pending.units, self._modes.parked, mode, self._rejections.row,
                                        self._service)]
        self._sink.commit(checkpoint, _extras(pending, None, stored, recorded),
                          "committing changes applied one by one")
        return stored


def _extras(pending: Pending, paused: tuple[int, int] | None, letters: Sequence[DeadLetter],
            recorded: AtCheckpoint) -> CommitExtras:
    return CommitExtras(pending.transactions, paused, letters, pending.chunks, recorded.moves, recorded.shapes)

"""A service worker's read loop: reads the change log, keeps its service's tables, applies whole transactions.

Owns: routing records by header, reassembling source transactions (dropping the incomplete copy capture
re-sends after a crash), refusing one whose records do not add up (`tally`), skipping records at or below
the position applied (re-sends and replays change nothing), batching complete transactions and when to
flush, holds, when to serve operator requests, the read position and rewinding it to the checkpoint the
service database holds.  Its siblings do the other jobs (`splitter.pipeline.worker` lists them; `scopes`:
ownership moves and echoes).  Must not: write SQL (the sink does), commit other than through `commit`,
or commit part of a source transaction.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime

from connectors.kafka.consumer import ChangeLogConsumer, LogRecord, OffsetGoneError, Skimmed
from connectors.pg.sink import ServiceSink
from connectors.pg.state.dead_letters import DeadLetter, Request
from connectors.pg.state.schema import FROM_BEGINNING, Checkpoint
from splitter.core import envelope, messages
from splitter.core.errors import FatalError, MalformedMessageError
from splitter.pipeline.config import Settings
from splitter.pipeline.sink import Sink
from splitter.pipeline.worker import on_error, requests
from splitter.pipeline.worker.commit import AtCheckpoint, Committer
from splitter.pipeline.worker.dead_letter_topic import DeadLetterTopic
from splitter.pipeline.worker.isolation import ApplyModes
from splitter.pipeline.worker.log_guard import LogGuard
from splitter.pipeline.worker.pacing import READ_RECORDS, Pacing
from splitter.pipeline.worker.parts import LargeTransactions
from splitter.pipeline.worker.schema_policy import SchemaChangeError, SchemaPolicy
from splitter.pipeline.worker.scopes import Moves, WriteScopes
from splitter.pipeline.worker.state import OpenTxn, Pending, WorkerStats
from splitter.pipeline.worker.tally import MESSAGE, Tally, log_gone, refused
from splitter.pipeline.worker.window import BackfillWindow, read_watermark, reload_routes

log = logging.getLogger(__name__)

# How often the control row (hold requests from verify and cutover) is read.
CONTROL_POLL_INTERVAL = 0.2


class Worker:
    def __init__(self, settings: Settings, service: str) -> None:
        self.settings = settings
        self.service = settings.topology.service(service)
        self.routes = settings.topology.routes_for(self.service)
        self._tables = {f"{r.source_schema}.{r.source_table}".encode() for r in self.routes}
        # Source columns the topology reads, per source table: a schema change touching them stops the service.
        self._schema = SchemaPolicy(self.service.name, self.routes)
        self.stats = WorkerStats()
        self._rejections = on_error.Rejections(lambda: (self.service, self.routes), self.stats)  # as reloaded
        self._letters: list[DeadLetter] = []
        self._modes = ApplyModes(self.service.name)
        self._dlq = DeadLetterTopic(settings, self.service.name)
        self._guard = LogGuard(settings, self.service.name)  # is the log the one the checkpoint was taken in?
        # (offset, commit LSN, source ts ms) of the last record read that moves the position.
        self._position = (FROM_BEGINNING, 0, 0)
        self._applied_lsn = 0
        self._rewound = False
        self._tally = Tally()  # the transaction being read, every table's records counted
        self._reset_batch()

    def _reset_batch(self) -> None:
        self._pending = Pending()
        self._open: OpenTxn | None = None

    def run(self, stop: threading.Event) -> None:
        s = self.settings
        sink = ServiceSink(s.target_dsn(self.service.name), self.service.name, self.routes, topic=s.topic)
        try:
            cp = self._wait_for_checkpoint(sink, stop)
            if cp is None:
                return
            consumer = ChangeLogConsumer(s.kafka_bootstrap, s.topic, s.group_id(self.service.name),
                                         extra=s.kafka_client("consumer"))
            try:
                self._stream(stop, sink, consumer, cp)
            finally:
                consumer.close()
        finally:
            sink.close()

    def _wait_for_checkpoint(self, sink: Sink, stop: threading.Event) -> Checkpoint | None:
        announced = False
        while not stop.is_set():
            cp = sink.checkpoint()
            if cp is not None:
                return cp
            if not announced:
                log.info("service %s: waiting for the initial copy to finish", self.service.name)
                announced = True
            stop.wait(0.5)
        return None

    def _bind(self, sink: Sink, consumer: ChangeLogConsumer) -> None:
        """The jobs of a run that talk to the service database and the log."""
        name = self.service.name
        self._sink = sink
        self._consumer = consumer
        self._commit = Committer(name, sink, consumer, self._dlq, self._modes, self.stats, self._rejections)
        self._parts = LargeTransactions(name, sink, self._modes, self.settings.max_txn_changes, self._rejections)
        self._backfill = BackfillWindow(sink, self._schema)
        self._scopes = WriteScopes(name, sink)

    def _stream(self, stop: threading.Event, sink: Sink, consumer: ChangeLogConsumer, cp: Checkpoint) -> None:
        self._bind(sink, consumer)
        self._modes.parked = sink.parked_keys()
        self._schema.start(*sink.source_shapes(cp.offset))
        self._rewind(cp)
        self._guard.expect(cp)
        self.stats.transactions_applied = sink.transactions_applied
        self.stats.rows_applied = sink.rows_applied
        log.info("service %s: applying from offset %s (commit LSN %X)", self.service.name,
                 cp.offset + 1 if cp.offset >= 0 else "earliest", cp.commit_lsn)
        last_control = 0.0  # read requests before anything else
        pacing = Pacing(self.settings.batch_max_rows, self.settings.batch_max_wait, self.settings.catch_up_batch_wait)
        pause_at: int | None = None
        holding = False
        while not stop.is_set():
            now = time.monotonic()
            # Control reads end the sink's transaction: not while it holds parts of a large transaction (a
            # hold or a request waits for its commit record).
            if now - last_control >= CONTROL_POLL_INTERVAL and not self._parts.pending:
                last_control = now
                request, requested = sink.poll_control()
                if request is not None:
                    self._serve_request(request)
                    continue
                if requested != pause_at:
                    pause_at, holding = requested, False
                    if pause_at is not None:
                        self._prepare_pause(pause_at)
            if holding:
                stop.wait(CONTROL_POLL_INTERVAL / 2)
                continue
            try:
                self._guard.check(self._position[0] + 1)
                # Other services' rows are left out (`taken` counts them), except while a backfill window is open.
                keep = self._tables if self._backfill.open is None else None
                records = consumer.read(READ_RECORDS, timeout=pacing.read_timeout(self._pending), keep=keep)
                pacing.read(full=consumer.taken >= READ_RECORDS)
            except OffsetGoneError as exc:
                raise log_gone(self.service.name, str(exc), *self._position[:2], self._names) from exc
            self._rewound = False
            for record in records:
                if isinstance(record, Skimmed):
                    lsn = record.lsn
                else:
                    headers = envelope.header_map(record.headers)
                    try:
                        lsn = envelope.header_lsn(headers, record.offset, self.settings.topic)
                    except MalformedMessageError as exc:
                        self._reject_record(record, exc)
                        continue
                if pause_at is not None and lsn >= pause_at and lsn > self._position[1]:
                    self._hold(pause_at, lsn, record.offset)
                    holding = True
                    break
                if isinstance(record, Skimmed):
                    self._skim(record.offset, lsn, record.sequence)  # most of the log: another service's row
                    continue
                try:
                    self._on_record(record, headers, lsn)
                except MalformedMessageError as exc:
                    self._reject_record(record, exc)
                if self._rewound:
                    break  # the rest of this read lies past the new read position
            if holding:
                continue
            moved = self._open is None and self._position[0] > self.stats.applied_offset
            if pacing.due(self._pending, consumer.at_end, consumer.taken == 0, moved):
                self._flush()

    def _hold(self, pause_at: int, lsn: int, offset: int) -> None:
        """Hold at `pause_at`, reached by the record at `offset` (of transaction `lsn`): everything committed
        before it is in hand (the log is in commit order); a transaction begun is read again after the hold."""
        resume_at = self._tally.resume_offset(lsn, offset)
        self._drop_open()
        self._tally.reset()
        self._flush(paused=(pause_at, max(self._position[1], self._applied_lsn)))
        self._consumer.seek(resume_at)
        log.info("service %s: holding at %X as requested", self.service.name, pause_at)

    @property
    def _names(self) -> str:
        return ", ".join(sorted({r.table.name for r in self.routes}))

    def _rewind(self, cp: Checkpoint) -> None:
        """Position everything at the checkpoint the service database holds."""
        if self._parts.pending:
            self._parts.abandon()
        self._rewound = True
        self._letters = []  # records past the checkpoint: reading them again sets them aside again
        self._reset_batch()
        self._tally.reset()
        self._schema.rewound(self._position[0])  # what was read up to here was judged
        self._position = (cp.offset, cp.commit_lsn, int(cp.source_ts.timestamp() * 1000) if cp.source_ts else 0)
        self._applied_lsn = cp.commit_lsn
        self.stats.applied_lsn, self.stats.applied_offset = cp.commit_lsn, cp.offset
        # A replay applies what it reads again under the scopes of the position it was asked at: from before a
        # move it would otherwise write what the service owns now, and nothing later would mend it.
        self._scopes.restore(self.settings.topology, self.routes, max(cp.commit_lsn, self._modes.replay_until))
        self._consumer.seek(cp.offset + 1 if cp.offset != FROM_BEGINNING else None)

    def _prepare_pause(self, pause_at: int) -> None:
        """A hold was requested: make sure nothing at or past `pause_at` gets applied."""
        if self._position[1] < pause_at:
            return  # what is in memory is all before the hold point: keep going up to it
        if self._applied_lsn >= pause_at:
            # Already applied past the point: report where we hold; the requester asks again later.
            self._flush(paused=(pause_at, max(self._position[1], self._applied_lsn)))
            return
        # The batch in memory crosses the hold point: drop it and read again from the checkpoint.
        cp = self._sink.checkpoint()
        assert cp is not None
        self._rewind(cp)

    def _flush(self, paused: tuple[int, int] | None = None, moves: Moves = ()) -> None:
        offset, lsn, ts_ms = self._position
        window = self._backfill.open
        if window is not None:
            # Reading must restart at the open chunk's low watermark, to note its changed keys again.
            offset = min(offset, window.low_offset - 1)
        started = time.monotonic()
        source_ts = datetime.fromtimestamp(ts_ms / 1000, UTC) if ts_ms else None
        checkpoint = Checkpoint(self.settings.topic, 0, offset, lsn, source_ts)
        recorded = AtCheckpoint(moves, self._schema.shapes_through(offset))
        stored = self._commit.commit(self._pending, checkpoint, paused, self._letters, self._parts.pending, recorded)
        if stored is None:
            # The parts applied before went with the rollback: read it all again, row by row.
            self._reread_isolated(self._position[1])
            return
        self._parts.settled()
        self._schema.committed(offset)
        self._letters = []
        st = self.stats
        st.last_apply_seconds = time.monotonic() - started
        st.last_batch_rows = len(self._pending.batch)
        st.batches += 1
        st.applied_lsn, st.applied_offset, st.applied_source_ts_ms = lsn, offset, ts_ms
        st.transactions_applied = self._sink.transactions_applied
        st.rows_applied = self._sink.rows_applied
        self._applied_lsn = lsn
        open_txn = self._open
        self._reset_batch()
        self._open = open_txn

    def _reread_isolated(self, through_lsn: int) -> None:
        log.warning("service %s: a large transaction was rejected after parts of it were applied; reading it "
                    "again from the checkpoint and applying it row by row", self.service.name)
        self._parts.settled()  # the sink rolled them back
        self._modes.isolate_through = max(self._modes.isolate_through, through_lsn)
        cp = self._sink.checkpoint()
        assert cp is not None
        self._rewind(cp)

    def _serve_request(self, request: Request) -> None:
        if request.action == "replay":
            cp = requests.replay(self._sink, request, self.settings.topic)
            self._modes.replay_until = max(self._modes.replay_until, self._applied_lsn)
            log.info("service %s: replaying from offset %d (transactions after %s)", self.service.name,
                     request.from_offset, request.from_lsn)
            self._rewind(cp)
            self._guard.expect(cp, replayed=True)
            return
        if self._pending.transactions:
            self._flush()
        result = requests.resolve_dead_letters(self._sink, request, self._modes.current)
        self._modes.parked = self._sink.parked_keys()
        log.info("service %s: %s", self.service.name, result)

    # -- records ------------------------------------------------------------------------------

    def _reject_record(self, record: LogRecord, exc: MalformedMessageError) -> None:
        """A record that is not a valid splitter event: dead letter it, or stop, by the service's own policy."""
        self._letters.append(on_error.unreadable_record(self.service, record, exc))
        if self._open is None and self._tally.reading is None and not self._pending.transactions:
            self._position = (record.offset, self._position[1], self._position[2])

    def _skim(self, offset: int, lsn: int, sequence: int | None) -> None:
        """A row record of a table this service does not route: counted in its transaction, nothing else."""
        if lsn > self._position[1] and self._tally.count(offset, lsn, sequence) and self._open is not None:
            self._discard_open()  # capture sent the transaction again: this record begins the new copy

    def _on_record(self, record: LogRecord, headers: dict[str, bytes], lsn: int) -> None:
        kind = headers.get(envelope.KIND_HEADER)
        if kind == envelope.KIND_ROW:
            table = headers.get(envelope.TABLE_HEADER)
            self._backfill.track(table, record.value, headers)
            if lsn <= self._position[1]:
                return
            restarted = self._tally.count(record.offset, lsn, envelope.row_sequence(record.value), table)
            if restarted and self._open is not None:
                self._discard_open()  # capture sent the transaction again: this record begins the new copy
            if table in self._tables and not self._scopes.echoed(headers):
                self._on_row(record, headers, table, lsn)
        elif kind == envelope.KIND_COMMIT:
            if lsn <= self._position[1]:
                return
            marker = envelope.decode_commit(record.value)
            incomplete = self._tally.close(marker, record.offset, self._tables)
            if incomplete is not None:
                raise self._refuse(refused(self.service.name, marker, incomplete, record.offset, self._names))
            if self._open is not None:
                if self._open.commit_lsn == lsn:
                    self._pending.add_transaction(lsn, self._open.changes)
                    if self._open.applied_in_parts:
                        self.stats.transactions_applied_in_parts += 1
                else:
                    self._discard_open()
                self._open = None
            self._position = (record.offset, lsn, marker.ts_ms)
        elif kind == envelope.KIND_MESSAGE:
            message = envelope.decode_message(record.value)
            if message.prefix == messages.BACKFILL and not message.transactional:
                self._on_watermark(record, message, lsn)
            if lsn <= self._position[1]:
                return
            if message.transactional:
                self._tally.count(record.offset, lsn, None, MESSAGE)
                return
            if self._open is not None:
                self._discard_open()
            self._tally.reset()  # no transaction goes on across a message outside transactions
            if message.prefix == messages.OWNERSHIP:
                self._on_ownership(record, message, lsn)
                if self._rewound:
                    return  # the flush before it read the batch again from the checkpoint
            self._position = (record.offset, lsn, message.ts_ms)
        else:
            raise MalformedMessageError(
                f"record at offset {record.offset} of {self.settings.topic!r} has kind {kind!r}: not a splitter record")

    def _on_ownership(self, record: LogRecord, message: envelope.ControlMessage, lsn: int) -> None:
        """What came before commits under the old scopes, the moves with the checkpoint here, then new scopes."""
        if lsn <= self._modes.replay_until:
            return  # a replay keeps the scopes the worker had when it was asked for (see `_rewind`)
        if moves := self._scopes.moves_at(message.content, record.offset, lsn, self.routes):
            if self._pending.transactions:
                self._flush()
                if self._rewound:
                    return
            self._position = (record.offset, lsn, message.ts_ms)
            self._flush(moves=moves)
            self._scopes.moved(moves, self.settings.topology, self.routes)

    def _on_watermark(self, record: LogRecord, message: envelope.ControlMessage, lsn: int) -> None:
        """A backfill watermark of this service (see `window`); a table it does not route reloads the topology."""
        mark = read_watermark(record.offset, message)
        if mark.service != self.service.name:
            return
        if mark.table.encode() not in self._tables:
            # A backfill names a table this worker does not route: take the current topology file.
            self.settings, self.service, self.routes = reload_routes(self.settings, self.service.name, mark.table)
            self._tables = {f"{r.source_schema}.{r.source_table}".encode() for r in self.routes}
            self._schema.set_routes(self.routes)
            self._sink.set_routes(self.routes)
            self._scopes.routes_changed(self.settings.topology, self.routes)
        try:
            self._backfill.on_mark(mark, record.offset, lsn, message.ts_ms, self._applied_lsn, self._pending)
        except SchemaChangeError as exc:  # the chunk was read in a shape the log has not reached (or left)
            raise self._refuse(exc) from None

    def _on_row(self, record: LogRecord, headers: dict[str, bytes], table: bytes, lsn: int) -> None:
        change = envelope.decode_row(record.value)
        if change.commit_lsn != lsn:
            raise MalformedMessageError(f"record at offset {record.offset}: header LSN {lsn} differs from its "
                                        f"value's {change.commit_lsn}")
        open_txn = self._open
        if open_txn is not None and (open_txn.commit_lsn != lsn or change.sequence <= open_txn.last_sequence):
            self._discard_open()
            open_txn = None
        if open_txn is None:
            open_txn = self._open = OpenTxn(lsn, -1, record.offset)
        try:
            relation = self._schema.relation(table, headers.get(envelope.SCHEMA_HEADER), record.offset)
        except SchemaChangeError as exc:
            raise self._refuse(exc) from None  # what came before the changing transaction is applied
        open_txn.changes.append((record.offset, change, relation))
        open_txn.last_sequence = change.sequence
        if self._parts.due(open_txn):
            self._apply_part(open_txn)

    def _apply_part(self, open_txn: OpenTxn) -> None:
        """Move the open transaction's changes so far into the sink's open transaction (see `parts`)."""
        if not open_txn.applied_in_parts:
            if self._pending.transactions:
                self._flush()  # complete transactions before it commit on their own
            self._parts.announce(open_txn)
        if not self._parts.apply(open_txn, self._letters):
            self._open = None
            self._reread_isolated(open_txn.commit_lsn)

    def _discard_open(self) -> None:
        """An incomplete transaction: capture stopped mid-way and sends it again whole."""
        self.stats.discarded_partial_transactions += 1
        log.debug("service %s: dropping an incomplete copy of a transaction", self.service.name)
        self._drop_open()

    def _drop_open(self) -> None:
        """Forget the transaction being read (it is read again); roll back its applied parts."""
        if self._open is not None and self._open.applied_in_parts:
            self._parts.abandon()
        self._open = None

    def _refuse(self, error: FatalError) -> FatalError:
        """A transaction that does not add up, or a schema change in it to stop at: roll back its parts, commit
        what came before it, stop (a type change's new shape is recorded: the restart takes it)."""
        self._drop_open()
        first = self._position[0]  # the read position is still before the refused transaction
        self._letters = [d for d in self._letters if d.kafka_offset <= first]
        if self._pending.transactions:
            self._flush()
        if isinstance(error, SchemaChangeError) and error.shape is not None:
            self._sink.record_schema_stop(error.table, error.offset, error.shape)
        return error

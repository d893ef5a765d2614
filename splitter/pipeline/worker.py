"""A service worker: reads the change log, keeps its service's tables, applies whole transactions.

Owns: routing records by header before parsing them, reassembling source transactions (and
dropping the incomplete copy of a transaction that capture re-sends after a crash), skipping
records at or below the position already applied (so re-sends and replays change nothing),
grouping complete transactions into one target transaction, and deciding when to flush.  The
checkpoint in the service database is the only truth about where to resume.  Must not: write
SQL (the sink does) or commit part of a source transaction.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

from connectors.kafka.log import ChangeLogConsumer, ChangeLogProducer, LogRecord, OffsetGoneError, ensure_topic
from connectors.pg.sink import ChunkDone, ServiceSink
from connectors.pg.state import dead_letters
from connectors.pg.state.schema import FROM_BEGINNING, Checkpoint
from splitter.core import envelope, messages
from splitter.core.batching import Batch
from splitter.core.envelope import RelationSchema, RowChange
from splitter.core.errors import DataRejectedError, FatalError, MalformedMessageError
from splitter.core.lsn import lsn_to_str, str_to_lsn
from splitter.pipeline.config import Settings
from splitter.topology.model import Route, expression_columns, load_topology

log = logging.getLogger(__name__)

# An idle service still records how far it has read, so lag reads zero on an idle source.
POSITION_WRITE_INTERVAL = 0.25
# How often the control row (hold requests from verify and cutover) is read.
CONTROL_POLL_INTERVAL = 0.2


@dataclass(slots=True)
class _OpenTxn:
    commit_lsn: int
    last_sequence: int
    first_offset: int  # where to read it again from (a hold, or a part the database rejected)
    changes: list[tuple[int, RowChange, RelationSchema]] = field(default_factory=list)
    # Earlier changes already applied, uncommitted, in the sink's open transaction (a large transaction).
    applied_in_parts: int = 0


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


def _columns_read(routes: list[Route]) -> dict[str, set[str]]:
    reads: dict[str, set[str]] = {}
    for r in routes:
        cols = reads.setdefault(f"{r.source_schema}.{r.source_table}", set())
        for expr in r.table.columns.values():
            cols |= expression_columns(expr)
    return reads


@dataclass(slots=True)
class _Window:
    """An open backfill chunk: between its low and high watermark, the keys the stream changed."""

    job_id: int
    chunk: int
    table: bytes
    low_offset: int
    keys: set[tuple[str | None, ...]] = field(default_factory=set)
    # Updates that left TOASTed columns out: they cannot replace the copied row, so they are re-applied
    # on top of it (setting the same values twice is harmless), in log order.
    partials: dict[tuple[str | None, ...], list[tuple[RowChange, RelationSchema]]] = field(default_factory=dict)
    truncated: bool = False

    def track(self, change: RowChange, headers: dict[str, bytes]) -> None:
        raw = headers.get(envelope.SCHEMA_HEADER)
        if raw is None:
            return
        if change.op == "t":
            self.truncated = True
            return
        relation = RelationSchema.from_header(self.table.decode(), raw)
        new_key = tuple(change.after.get(k) for k in relation.key_columns) if change.after is not None else None
        old_key = tuple(change.before.get(k) for k in relation.key_columns) if change.before is not None else None
        if change.op == "u" and change.unchanged_toast and new_key is not None and old_key in (None, new_key):
            self.partials.setdefault(new_key, []).append((change, relation))
            return
        for key in (old_key, new_key):
            if key is not None:
                self.keys.add(key)


def _unit_key(unit: tuple[int, RowChange, RelationSchema]) -> tuple[str, tuple[str | None, ...]]:
    _, change, relation = unit
    image = change.after if change.after is not None else (change.before or {})
    return change.table, tuple(image.get(c) for c in relation.key_columns)


class Worker:
    def __init__(self, settings: Settings, service: str) -> None:
        self.settings = settings
        self.service = settings.topology.service(service)
        self.routes = settings.topology.routes_for(self.service)
        self._tables = {f"{r.source_schema}.{r.source_table}".encode() for r in self.routes}
        # Source columns the topology reads, per source table: a schema change touching them stops the service.
        self._reads = _columns_read(self.routes)
        self._window: _Window | None = None
        self._sink: ServiceSink | None = None
        self.stats = WorkerStats()
        self._relations: dict[bytes, RelationSchema] = {}
        self._last_shape: dict[str, RelationSchema] = {}
        self._letters: list[dead_letters.DeadLetter] = []
        self._parked: set[tuple[str, tuple[str | None, ...]]] = set()
        self._dlq_producer: ChangeLogProducer | None = None
        # The commit LSN the service database held when a replay was asked for: batches at or below it
        # re-apply what the database already saw, over a newer state (see ServiceSink.replaying).
        self._replay_until = 0
        # Transactions up to this commit LSN are applied row by row: the database rejected a row in them
        # after their first parts had gone (a large transaction), so they are read again, isolated.
        self._isolate_through = 0
        # The sink's open transaction holds applied parts of a large source transaction.
        self._parts_pending = False
        self._rewound = False
        self._reset_batch()

    def _reset_batch(self) -> None:
        self._batch = Batch()
        self._units: list[tuple[int, RowChange, RelationSchema]] = []
        self._chunks: list[ChunkDone] = []
        self._batch_txns = 0
        self._batch_started = 0.0
        self._batch_first_lsn = 0
        self._open: _OpenTxn | None = None

    def run(self, stop: threading.Event) -> None:
        s = self.settings
        sink = ServiceSink(s.target_dsn(self.service.name), self.service.name, self.routes, topic=s.topic)
        try:
            cp = self._wait_for_checkpoint(sink, stop)
            if cp is None:
                return
            consumer = ChangeLogConsumer(s.kafka_bootstrap, s.topic, s.group_id(self.service.name),
                                         extra=dict(s.kafka_extra))
            try:
                self._stream(stop, sink, consumer, cp)
            finally:
                consumer.close()
        finally:
            sink.close()

    def _wait_for_checkpoint(self, sink: ServiceSink, stop: threading.Event) -> Checkpoint | None:
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

    def _stream(self, stop: threading.Event, sink: ServiceSink, consumer: ChangeLogConsumer, cp: Checkpoint) -> None:
        self._consumer = consumer
        self._sink = sink
        self._parked = sink.parked_keys()
        self._rewind(cp)
        self.stats.transactions_applied = sink.transactions_applied
        self.stats.rows_applied = sink.rows_applied
        log.info("service %s: applying from offset %s (commit LSN %X)", self.service.name,
                 cp.offset + 1 if cp.offset >= 0 else "earliest", cp.commit_lsn)
        last_write = time.monotonic()
        last_control = 0.0  # read requests before anything else
        max_rows, max_wait = self.settings.batch_max_rows, self.settings.batch_max_wait
        pause_at: int | None = None
        holding = False
        while not stop.is_set():
            now = time.monotonic()
            # Control reads end the sink's transaction: not while it holds parts of a large transaction (a
            # hold or a request waits for its commit record).
            if now - last_control >= CONTROL_POLL_INTERVAL and not self._parts_pending:
                last_control = now
                request, requested = sink.poll_control()
                if request is not None:
                    self._serve_request(sink, request)
                    continue
                if requested != pause_at:
                    pause_at, holding = requested, False
                    if pause_at is not None:
                        self._prepare_pause(sink, pause_at)
            if holding:
                stop.wait(CONTROL_POLL_INTERVAL / 2)
                continue
            try:
                records = consumer.read(2000, timeout=0.02 if self._batch_txns else 0.25)
            except OffsetGoneError as exc:
                raise self._gone(exc) from exc
            self._rewound = False
            for record in records:
                headers = envelope.header_map(record.headers)
                try:
                    lsn = self._record_lsn(record, headers)
                except MalformedMessageError as exc:
                    self._reject_record(record, exc)
                    continue
                if pause_at is not None and lsn >= pause_at and lsn > self._position[1]:
                    # Everything committed before pause_at is in hand (the log is in commit order).  A
                    # transaction already begun is read again from its first record after the hold.
                    resume_at = record.offset if self._open is None else self._open.first_offset
                    self._drop_open()
                    self._flush(sink, paused=(pause_at, max(self._position[1], self._applied_lsn)))
                    consumer.seek(resume_at)
                    holding = True
                    log.info("service %s: holding at %X as requested", self.service.name, pause_at)
                    break
                try:
                    self._on_record(record, headers, lsn)
                except MalformedMessageError as exc:
                    self._reject_record(record, exc)
                if self._rewound:
                    break  # the rest of this read lies past the new read position
            if holding:
                continue
            now = time.monotonic()
            batch_due = self._batch_txns and (len(self._batch) >= max_rows or not records
                                              or now - self._batch_started >= max_wait)
            # An idle service still records how far it has read, so its lag reads zero.
            position_due = (not self._batch_txns and self._open is None
                            and self._position[0] > self.stats.applied_offset
                            and now - last_write >= POSITION_WRITE_INTERVAL)
            if batch_due or position_due:
                self._flush(sink)
                last_write = now

    def _gone(self, exc: OffsetGoneError) -> FatalError:
        name = self.service.name
        tables = ", ".join(sorted({r.table.name for r in self.routes}))
        return FatalError(
            f"service {name}: {exc}. It applied the log up to offset {self._position[0]} (commit LSN "
            f"{lsn_to_str(self._position[1])}); the changes after that can no longer be read, so it stops rather "
            f"than go on without them. To recover: `splitter replay --service {name} --from-offset <the earliest "
            f"offset the log holds> --accept-gap --yes`, restart this worker, then re-copy each table while it "
            f"streams: `splitter backfill --service {name} --table T` for T in {tables}")

    def _rewind(self, cp: Checkpoint) -> None:
        """Position everything at the checkpoint the service database holds."""
        if self._parts_pending:
            self._abandon_parts()
        self._rewound = True
        self._letters = []  # records past the checkpoint: reading them again sets them aside again
        self._reset_batch()
        self._position = (cp.offset, cp.commit_lsn, int(cp.source_ts.timestamp() * 1000) if cp.source_ts else 0)
        self._applied_lsn = cp.commit_lsn
        self.stats.applied_lsn, self.stats.applied_offset = cp.commit_lsn, cp.offset
        self._consumer.seek(cp.offset + 1 if cp.offset != FROM_BEGINNING else None)

    def _prepare_pause(self, sink: ServiceSink, pause_at: int) -> None:
        """A hold was requested: make sure nothing at or past `pause_at` gets applied."""
        if self._position[1] < pause_at:
            return  # what is in memory is all before the hold point: keep going up to it
        if self._applied_lsn >= pause_at:
            # Already applied past the point: report where we hold; the requester asks again later.
            self._flush(sink, paused=(pause_at, max(self._position[1], self._applied_lsn)))
            return
        # The batch in memory crosses the hold point: drop it and read again from the checkpoint.
        cp = sink.checkpoint()
        assert cp is not None
        self._rewind(cp)

    def _flush(self, sink: ServiceSink, paused: tuple[int, int] | None = None) -> None:
        offset, lsn, ts_ms = self._position
        if self._window is not None:
            # Reading must restart at the open chunk's low watermark, to note its changed keys again.
            offset = min(offset, self._window.low_offset - 1)
        started = time.monotonic()
        source_ts = datetime.fromtimestamp(ts_ms / 1000, UTC) if ts_ms else None
        checkpoint = Checkpoint(self.settings.topic, 0, offset, lsn, source_ts)
        chunks = self._chunks
        sink.replaying = 0 < self._batch_first_lsn <= self._replay_until
        letters = self._letters
        if self._isolated(self._batch_first_lsn, self._units):
            stored = sink.apply_isolated(self._units, checkpoint, self._batch_txns, self._parked, letters, chunks)
        else:
            try:
                sink.apply(self._batch.steps(), checkpoint, self._batch_txns, paused=paused, letters=letters,
                           chunks=chunks)
                stored = list(letters)
            except DataRejectedError as exc:
                self._on_rejected(exc)
                if self._parts_pending:
                    # The parts applied before went with the rollback: read it all again, row by row.
                    self._reread_isolated(sink, self._position[1])
                    return
                log.warning("service %s: batch rejected (SQLSTATE %s); applying it row by row", self.service.name,
                            exc.sqlstate)
                stored = sink.apply_isolated(self._units, checkpoint, self._batch_txns, self._parked, letters,
                                             chunks)
        self._parts_pending = False
        self._letters = []
        if stored:
            self.stats.dead_lettered += len(stored)
            self._publish_dead_letters(stored)
        self._consumer.commit(offset + 1)
        st = self.stats
        st.last_apply_seconds = time.monotonic() - started
        st.last_batch_rows = len(self._batch)
        st.batches += 1
        st.applied_lsn, st.applied_offset, st.applied_source_ts_ms = lsn, offset, ts_ms
        st.transactions_applied = sink.transactions_applied
        st.rows_applied = sink.rows_applied
        self._applied_lsn = lsn
        open_txn = self._open
        self._reset_batch()
        self._open = open_txn

    def _isolated(self, first_lsn: int, units: list[tuple[int, RowChange, RelationSchema]]) -> bool:
        """Apply `units` row by row: a row was rejected there before, or a parked row has changes in them."""
        return (0 < first_lsn <= self._isolate_through
                or bool(self._parked and any(_unit_key(u) in self._parked for u in units)))

    def _on_rejected(self, exc: DataRejectedError) -> None:
        if self.service.on_error != "dead_letter":
            raise FatalError(
                f"{exc} (SQLSTATE {exc.sqlstate}). Service {self.service.name} stops here (on_error=stop): "
                f"fix the target or the topology and restart, or set on_error='dead_letter' for this "
                f"service to isolate rejected rows") from exc
        self.stats.retries_by_kind["data_rejected"] = self.stats.retries_by_kind.get("data_rejected", 0) + 1

    def _reread_isolated(self, sink: ServiceSink, through_lsn: int) -> None:
        log.warning("service %s: a large transaction was rejected after parts of it were applied; reading it "
                    "again from the checkpoint and applying it row by row", self.service.name)
        self._parts_pending = False  # the sink rolled them back
        self._isolate_through = max(self._isolate_through, through_lsn)
        cp = sink.checkpoint()
        assert cp is not None
        self._rewind(cp)

    # -- large transactions: applied in parts, committed with their commit record --------------

    def _apply_part(self, open_txn: _OpenTxn) -> None:
        """Move the open transaction's changes so far into the sink's open transaction (uncommitted)."""
        sink = self._sink
        assert sink is not None
        if not open_txn.applied_in_parts:
            if self._batch_txns:
                self._flush(sink)  # complete transactions before it commit on their own
            log.info("service %s: transaction with commit LSN %X has over %d changes; applying it in parts in one "
                     "target transaction", self.service.name, open_txn.commit_lsn, self.settings.max_txn_changes)
        sink.replaying = 0 < open_txn.commit_lsn <= self._replay_until
        units = open_txn.changes
        self._parts_pending = True
        try:
            if self._isolated(open_txn.commit_lsn, units):
                self._letters.extend(sink.apply_part_isolated(units, self._parked))
            else:
                part = Batch()
                for _, change, relation in units:
                    part.add(change, relation)
                sink.apply_part(part.steps())
        except DataRejectedError as exc:
            self._on_rejected(exc)
            self._open = None
            self._reread_isolated(sink, open_txn.commit_lsn)
            return
        open_txn.applied_in_parts += len(units)
        open_txn.changes = []

    def _abandon_parts(self) -> None:
        assert self._sink is not None
        self._sink.abandon()
        self._parts_pending = False

    def _drop_open(self) -> None:
        """Forget the transaction being read (it is read again); roll back its applied parts."""
        if self._open is not None and self._open.applied_in_parts:
            self._abandon_parts()
        self._open = None

    def _publish_dead_letters(self, letters: list[dead_letters.DeadLetter]) -> None:
        """Copy to the dead-letter topic for alerting and tooling (the table is the record of truth)."""
        topic = f"{self.settings.topic}.dlq.{self.service.name}"
        try:
            if self._dlq_producer is None:
                ensure_topic(self.settings.kafka_bootstrap, topic)
                self._dlq_producer = ChangeLogProducer(self.settings.kafka_bootstrap, topic,
                                                       dict(self.settings.kafka_extra))
            for letter in letters:
                value = orjson.dumps({
                    "service": self.service.name, "table": letter.source_table, "op": letter.op,
                    "key": letter.source_key, "sqlstate": letter.sqlstate, "error": letter.error,
                    "offset": letter.kafka_offset, "lsn": lsn_to_str(letter.commit_lsn) if letter.commit_lsn else None,
                    "event": letter.event,
                    "raw_value": letter.raw_value.decode(errors="replace") if letter.raw_value else None})
                self._dlq_producer.produce(b"", value, [("splitter.sqlstate", (letter.sqlstate or "").encode())])
            self._dlq_producer.flush(10.0)
        except Exception as exc:  # the rows are safe in splitter.dead_letters; the topic is a copy
            log.warning("service %s: could not copy %d dead letter(s) to topic %s: %s", self.service.name,
                        len(letters), topic, exc)

    def _serve_request(self, sink: ServiceSink, request: dead_letters.Request) -> None:
        if request.action == "replay":
            assert request.from_offset is not None and request.from_lsn is not None
            cp = Checkpoint(self.settings.topic, 0, request.from_offset - 1, str_to_lsn(request.from_lsn), None)
            sink.rewind_to(request, cp)
            self._replay_until = max(self._replay_until, self._applied_lsn)
            log.info("service %s: replaying from offset %d (transactions after %s)", self.service.name,
                     request.from_offset, request.from_lsn)
            self._rewind(cp)
            return
        if self._batch_txns:
            self._flush(sink)
        result = sink.resolve_dead_letters(request)
        self._parked = sink.parked_keys()
        log.info("service %s: %s", self.service.name, result)

    # -- records ------------------------------------------------------------------------------

    def _reject_record(self, record: LogRecord, exc: MalformedMessageError) -> None:
        """A record that is not a valid splitter event: dead letter it, or stop, by the service's policy."""
        if self.service.on_error != "dead_letter":
            raise FatalError(f"service {self.service.name}: {exc} (offset {record.offset}); the worker stops here "
                             f"(on_error=stop). Set on_error='dead_letter' to set such records aside") from exc
        log.warning("service %s: dead-lettering unreadable record at offset %d: %s", self.service.name,
                    record.offset, exc)
        self._letters.append(dead_letters.DeadLetter(
            None, None, None, dead_letters.event_json(record.value), record.value or b"", None, str(exc),
            record.offset, None))
        if self._open is None and not self._batch_txns:
            self._position = (record.offset, self._position[1], self._position[2])

    def _record_lsn(self, record: LogRecord, headers: dict[str, bytes]) -> int:
        try:
            return int(headers[envelope.LSN_HEADER])
        except (KeyError, ValueError) as exc:
            raise MalformedMessageError(
                f"record at offset {record.offset} of {self.settings.topic!r} has no valid {envelope.LSN_HEADER} "
                f"header: it was not written by splitter capture") from exc

    def _on_record(self, record: LogRecord, headers: dict[str, bytes], lsn: int) -> None:
        kind = headers.get(envelope.KIND_HEADER)
        if kind == envelope.KIND_ROW:
            table = headers.get(envelope.TABLE_HEADER)
            window = self._window
            if window is not None and table == window.table:
                window.track(envelope.decode_row(record.value), headers)
            if table not in self._tables or lsn <= self._position[1]:
                return
            self._on_row(record, headers, table, lsn)
        elif kind == envelope.KIND_COMMIT:
            if lsn <= self._position[1]:
                return
            marker = envelope.decode_commit(record.value)
            if self._open is not None:
                if self._open.commit_lsn == lsn:
                    if not self._batch_txns:
                        self._batch_started = time.monotonic()
                        self._batch_first_lsn = lsn
                    for offset, change, relation in self._open.changes:
                        self._batch.add(change, relation)
                        self._units.append((offset, change, relation))
                    self._batch_txns += 1
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
            if message.transactional or lsn <= self._position[1]:
                return
            if self._open is not None:
                self._discard_open()
            self._position = (record.offset, lsn, message.ts_ms)
        else:
            raise MalformedMessageError(
                f"record at offset {record.offset} of {self.settings.topic!r} has kind {kind!r}: not a splitter record")

    # -- online backfill: DBLog watermarks ----------------------------------------------------

    def _on_watermark(self, record: LogRecord, message: envelope.ControlMessage, lsn: int) -> None:
        """Low watermark: start noting which rows of the table the stream changes.  High: apply the chunk
        copied in between, minus those rows (the stream carries their newer values), at this point of the log.
        """
        try:
            mark = orjson.loads(message.content)
            service, table, job_id, chunk, kind = (mark["service"], mark["table"], int(mark["job"]),
                                                   int(mark["chunk"]), mark["mark"])
            # A repair chunk names the missed keys it copies again (see connectors.backfill_store).
            repaired: list[list[str | None]] | None = mark.get("repair")
            if repaired is not None and not (isinstance(repaired, list) and all(isinstance(k, list) for k in repaired)):
                raise TypeError("'repair' is not a list of keys")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise MalformedMessageError(f"backfill watermark at offset {record.offset} is not valid: {exc}") from exc
        if service != self.service.name:
            return
        if table.encode() not in self._tables:
            self._reload_topology(table)
        if kind == "low":
            self._window = _Window(job_id, chunk, table.encode(), record.offset)
            return
        window = self._window
        if kind != "high" or window is None or (window.job_id, window.chunk) != (job_id, chunk):
            return  # a high without its low in this run: the backfill command sends that chunk again
        self._window = None
        if lsn <= self._applied_lsn:
            return  # applied before a restart
        assert self._sink is not None
        job, rows = self._sink.backfill_chunk(job_id, chunk)
        if job is None:
            return
        relation = RelationSchema.from_header(table, job.relation_header.encode())
        self._check_shape(relation, record.offset)
        keys = relation.key_columns
        copied = skipped = 0
        copied_keys: list[list[str | None]] = []
        last_key: tuple[str | None, ...] | None = None
        if not self._batch_txns:
            self._batch_started = time.monotonic()
        for row in rows:
            values = {k: (None if v is None else str(v)) for k, v in row.items()}
            key = tuple(values.get(k) for k in keys)
            last_key = key
            if window.truncated or key in window.keys:
                skipped += 1
                continue
            change = RowChange("r", table, None, values, (), lsn, 0, 0, message.ts_ms)
            self._batch.add(change, relation)
            self._units.append((record.offset, change, relation))
            for partial, partial_relation in window.partials.get(key, ()):
                self._batch.add(partial, partial_relation)
                self._units.append((record.offset, partial, partial_relation))
            copied += 1
            copied_keys.append(list(key))
        self._batch_txns += 1
        if repaired is not None:
            last_key = None  # a repair chunk copies keys again; it does not move the key cursor
        self._chunks.append(ChunkDone(job_id, chunk, copied, skipped, list(last_key) if last_key else None,
                                      bool(mark.get("final")), repaired or (), copied_keys, lsn))

    def _reload_topology(self, table: str) -> None:
        """A backfill names a table this worker does not route: take the current topology file."""
        path = self.settings.topology_path
        if path is None:
            raise FatalError(f"service {self.service.name}: a backfill of {table} arrived but the topology file is "
                             f"unknown; restart the worker with the new topology")
        topology = load_topology(path)
        self.settings = dataclasses.replace(self.settings, topology=topology)
        self.service = topology.service(self.service.name)
        self.routes = topology.routes_for(self.service)
        self._tables = {f"{r.source_schema}.{r.source_table}".encode() for r in self.routes}
        self._reads = _columns_read(self.routes)
        if table.encode() not in self._tables:
            raise FatalError(f"service {self.service.name}: a backfill of {table} arrived but {path} does not route "
                             f"{table} to this service")
        assert self._sink is not None
        self._sink.set_routes(self.routes)
        log.info("service %s: reloaded %s; now routing %s", self.service.name, path, table)

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
            open_txn = self._open = _OpenTxn(lsn, -1, record.offset)
        raw_schema = headers.get(envelope.SCHEMA_HEADER)
        if raw_schema is None:
            raise MalformedMessageError(f"row record at offset {record.offset} has no schema header")
        relation = self._relations.get(raw_schema)
        if relation is None:
            relation = RelationSchema.from_header(table.decode(), raw_schema)
            self._check_shape(relation, record.offset)
            self._relations[raw_schema] = relation
        open_txn.changes.append((record.offset, change, relation))
        open_txn.last_sequence = change.sequence
        if len(open_txn.changes) >= self.settings.max_txn_changes:
            self._apply_part(open_txn)

    def _check_shape(self, relation: RelationSchema, offset: int) -> None:
        """Schema-change policy: go on unless a column the topology reads is gone or changed type."""
        name = relation.qualified
        types = {c.name: c.sql_type for c in relation.columns}
        missing = sorted(self._reads.get(name, set()) - types.keys())
        if missing:
            raise FatalError(
                f"service {self.service.name}: source table {name} no longer has column(s) {', '.join(missing)} "
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
                    f"service {self.service.name}: source table {name} changed the type of {details} (at log offset "
                    f"{offset}), which topology.py reads. Check the expressions and the target column types, then "
                    f"restart this worker")
        self._last_shape[name] = relation

    def _discard_open(self) -> None:
        """An incomplete transaction: capture stopped mid-way and sends it again whole."""
        self.stats.discarded_partial_transactions += 1
        log.debug("service %s: dropping an incomplete copy of a transaction", self.service.name)
        self._drop_open()

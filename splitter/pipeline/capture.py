"""Capture: the source's logical replication stream, in commit order, into the Kafka change log.

Owns: the one loop that reads pgoutput from the slot, turns each change into an envelope record (marked
with the replication origin its transaction was applied under, if any), produces it, and confirms to the
slot only positions whose every record Kafka has acknowledged (in-order delivery counts: `pending` holds
(records produced so far, LSN) per transaction end).  On an idle stream it confirms the server's reported
position once nothing is in flight, and writes heartbeats so a source whose published tables are idle
while others are busy does not keep WAL without bound.  Its siblings do the rest: `log_identity` (a new
slot's log-start record, and the lost-log check on an existing slot), `copy_plan` (the slot and the
initial copy before the stream, and the services whose database did not answer, copied while it
streams), `broker_watch` (a broker that does not answer) and `capture_health` (the `degraded` row
`splitter status` reads).  Must not: apply to service databases, confirm anything before the broker has
it, or run SQL itself (its statements are `connectors.pg.source`'s).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from connectors.kafka.admin import ensure_topic
from connectors.kafka.producer import ChangeLogProducer
from connectors.pg.client import Connection, DatabaseError, connect
from connectors.pg.pgoutput import messages as po
from connectors.pg.pgoutput.decoder import PgOutputDecoder
from connectors.pg.replication_protocol import PrimaryKeepalive
from connectors.pg.source import (
    FIRST_USER_OID,
    ReplicationConnection,
    emit_heartbeat,
    ensure_publication,
    row_key_columns,
    try_lock_slot,
    type_names,
)
from splitter.core import envelope, messages
from splitter.core.dsn import SOURCE_DATABASE, mask_secrets
from splitter.core.envelope import ColumnSchema, RelationSchema
from splitter.core.errors import FatalError, MalformedMessageError, RetryableError, SplitterError
from splitter.core.lsn import lsn_to_str
from splitter.pipeline import broker_watch, capture_health, log_identity
from splitter.pipeline.config import Settings
from splitter.pipeline.copy_plan import LaterCopies, prepare_stream

log = logging.getLogger(__name__)

# Messages handled per pass of the loop before Kafka delivery reports and the slot position are served.
DRAIN_BATCH = 2000
#: Records waiting for the broker beyond which capture stops reading the slot (the client's queue holds 1 M).
MAX_IN_FLIGHT = 500_000
#: Heartbeats failing this many times in a row, or for this many seconds, are an error (metrics, /healthz):
#: while they fail, an idle source's slot does not advance and retained WAL grows.
HEARTBEAT_FAILURES_ERROR = 3
HEARTBEAT_FAILING_SECONDS = 30.0


@dataclass(slots=True)
class _Relation:
    schema: RelationSchema
    header: bytes
    qualified: str
    names: tuple[str, ...]
    identity: tuple[str, ...]  # replica identity columns, as the Relation message flags them


@dataclass(slots=True)
class _Txn:
    xid: int
    commit_lsn: int
    ts_ms: int
    records: int = 0
    origin: str | None = None  # the replication origin it was applied under (a reverse stream's writes)
    tables: dict[str, int] = field(default_factory=dict)  # row records per table, for the commit record


class CaptureStats:
    """Counters the metrics and status views read (plain attributes: one writer thread)."""

    def __init__(self) -> None:
        self.records_produced = 0
        self.transactions = 0
        self.confirmed_lsn = 0
        self.received_lsn = 0
        self.last_commit_ts_ms = 0
        self.by_table_op: dict[tuple[str, str], int] = {}
        #: Consecutive failed heartbeats (0 after a successful one) and the last failure's (masked) message.
        self.heartbeat_failures = 0
        self.last_heartbeat_error: str | None = None
        #: True once they failed HEARTBEAT_FAILURES_ERROR times in a row or for HEARTBEAT_FAILING_SECONDS.
        self.heartbeat_failing = False
        #: The broker has not answered (delivery or metadata) for a while; the last such (masked) error.
        #: Set and cleared by the produce path; status, /healthz and the metrics report it.
        self.broker_unreachable = False
        self.last_broker_error: str | None = None


class Capture:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stats = CaptureStats()
        self._relations: dict[int, _Relation] = {}
        self._types: dict[tuple[int, int], str] = {}
        self._txn: _Txn | None = None
        self._drop_origin_rows = False  # rows of transactions applied under an origin are left out
        self._pending: deque[tuple[int, int]] = deque()
        self._idle_lsn = 0
        self._catalog_broken = False  # a heartbeat failed on it: reopened before the next use
        self._last_heartbeat_ok = time.monotonic()

    # -- setup --------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        s = self.settings
        lock = connect(s.source_dsn, SOURCE_DATABASE, autocommit=True, application_name="splitter-capture")
        try:
            if not try_lock_slot(lock, s.slot):
                raise RetryableError(f"another splitter capture holds slot {s.slot!r}; waiting for it to stop")
            self._catalog = connect(s.source_dsn, SOURCE_DATABASE, autocommit=True,
                                    application_name="splitter-capture")
            try:
                self._run_locked(stop)
            finally:
                self._catalog.close()
        finally:
            lock.close()

    def _run_locked(self, stop: threading.Event) -> None:
        s = self.settings
        ensure_publication(self._catalog, s.publication, s.topology.source_tables())
        ensure_topic(s.kafka_bootstrap, s.topic, settings=s.kafka_config.topic, config=s.kafka_client("admin"),
                     on_unreachable=broker_watch.reporter(self.stats))
        producer = ChangeLogProducer(s.kafka_bootstrap, s.topic, s.kafka_client("producer"))
        repl = ReplicationConnection(s.source_dsn)
        later: LaterCopies | None = None
        try:
            log_identity.open_log(s, self._catalog, producer)  # a new slot's log, or the lost-log check
            start = prepare_stream(s, self._catalog, repl)  # the slot, and the copies the stream needs first
            confirmed = start.confirmed  # a slot position: the next commit to stream may start here
            self.stats.confirmed_lsn = confirmed
            # Services whose database did not answer are copied once it does, while the others stream.
            later = LaterCopies(s, start, stop)
            # Before PostgreSQL 16 the server cannot leave out a worker's writes: capture drops them itself.
            self._drop_origin_rows = not repl.start(s.slot, s.publication, origin=s.capture_origin)
            log.info("streaming slot %s from %s into topic %s", s.slot, lsn_to_str(confirmed), s.topic)
            self._stream(later.stop, repl, producer, confirmed)
            later.raise_failure()
        finally:
            if later is not None:
                later.close()
            repl.close()

    # -- the loop -----------------------------------------------------------------------------

    def _stream(self, stop: threading.Event, repl: ReplicationConnection, producer: ChangeLogProducer,
                confirmed: int) -> None:
        s = self.settings
        decoder = PgOutputDecoder()
        last_status = last_heartbeat = time.monotonic()
        self._last_heartbeat_ok = last_heartbeat  # the initial copy's time is not heartbeats failing
        reply = False
        watch = broker_watch.BrokerWatch(s, self.stats)
        try:
            while not stop.is_set():
                # A broker that does not acknowledge fills the producer's queue: stop reading the slot (it keeps
                # the changes) and keep serving status and heartbeats until there is room again.
                full = producer.in_flight >= MAX_IN_FLIGHT
                msg = None if full else repl.read(timeout=0.05 if producer.in_flight else 0.2)
                # Drain what libpq already holds before the per-pass work (poll, confirm, status): that
                # bookkeeping once per burst instead of once per change.
                handled = 0
                while msg is not None:
                    if isinstance(msg, PrimaryKeepalive):
                        self.stats.received_lsn = max(self.stats.received_lsn, msg.wal_end)
                        if self._txn is None:
                            self._idle_lsn = max(self._idle_lsn, msg.wal_end)
                        reply = reply or msg.reply_requested
                    else:
                        self._handle(decoder.decode(msg.payload), producer)
                        if msg.wal_end > self.stats.received_lsn:
                            self.stats.received_lsn = msg.wal_end
                    handled += 1
                    msg = repl.read(timeout=0.0) if handled < DRAIN_BATCH else None
                producer.poll(0.05 if full else 0)
                watch.observe(producer)
                confirmed = self._confirmable(producer, confirmed)
                now = time.monotonic()
                if reply or now - last_status >= s.status_interval:
                    repl.send_status(confirmed)
                    self.stats.confirmed_lsn = confirmed
                    last_status, reply = now, False
                if now - last_heartbeat >= s.heartbeat_interval:
                    self._heartbeat()
                    last_heartbeat = now
        finally:
            # Clean stop: whatever Kafka acknowledges now is confirmed; the rest is re-sent next time.
            try:
                producer.flush(10.0)
                confirmed = self._confirmable(producer, confirmed)
            except (RetryableError, FatalError) as exc:  # nothing past the last confirmation is confirmed
                log.warning("stopping with unacknowledged records: %s", exc)
            try:
                repl.send_status(confirmed)
                self.stats.confirmed_lsn = confirmed
            except RetryableError:
                pass

    def _confirmable(self, producer: ChangeLogProducer, confirmed: int) -> int:
        pending = self._pending
        acked = producer.acked
        while pending and pending[0][0] <= acked:
            confirmed = max(confirmed, pending.popleft()[1])
        if not pending and self._txn is None and producer.in_flight == 0:
            confirmed = max(confirmed, self._idle_lsn)
        return confirmed

    def _heartbeat(self) -> None:
        """Write a heartbeat; a failure closes the catalog session, so the next heartbeat opens a new one."""
        st = self.stats
        capture_health.watch(self.settings, st)  # records failing heartbeats (and the broker) for `splitter status`
        try:
            emit_heartbeat(self._catalog_connection())
        except (DatabaseError, SplitterError) as exc:  # the session died, or reopening it failed
            self._catalog_broken = True
            st.heartbeat_failures += 1
            lines = str(exc).strip().splitlines()
            text = lines[0] if lines else type(exc).__name__
            sqlstate = exc.sqlstate if isinstance(exc, DatabaseError) else None
            message = f"{sqlstate}: {text}" if sqlstate else text
            st.last_heartbeat_error = mask_secrets(message, self.settings.source_dsn)
            was_failing = st.heartbeat_failing
            st.heartbeat_failing = (st.heartbeat_failures >= HEARTBEAT_FAILURES_ERROR
                                    or time.monotonic() - self._last_heartbeat_ok >= HEARTBEAT_FAILING_SECONDS)
            if st.heartbeat_failures == 1 or st.heartbeat_failing != was_failing or st.heartbeat_failures % 60 == 0:
                log.log(logging.ERROR if st.heartbeat_failing else logging.WARNING,
                        "heartbeat failed %d time(s) in a row (%s); the slot does not advance and retained WAL "
                        "grows while heartbeats fail", st.heartbeat_failures, st.last_heartbeat_error)
            return
        if st.heartbeat_failures:
            log.info("heartbeats succeed again after %d failure(s)", st.heartbeat_failures)
        st.heartbeat_failures, st.last_heartbeat_error, st.heartbeat_failing = 0, None, False
        self._last_heartbeat_ok = time.monotonic()

    def _catalog_connection(self) -> Connection:
        """The catalog session, reopened first if a heartbeat failed on it (the replication stream is not touched)."""
        if self._catalog_broken:
            self._catalog.close()
            self._catalog = connect(self.settings.source_dsn, SOURCE_DATABASE, autocommit=True,
                                    application_name="splitter-capture")
            self._catalog_broken = False
        return self._catalog

    # -- one pgoutput message -----------------------------------------------------------------

    def _handle(self, message: po.Message, producer: ChangeLogProducer) -> None:
        if isinstance(message, po.Begin):
            self._txn = _Txn(message.xid, message.final_lsn, message.commit_time_unix_ms)
        elif isinstance(message, po.Insert):
            rel = self._relation(message.relation_oid)
            self._row(producer, rel, "c", None, self._image(rel, message.new))
        elif isinstance(message, po.Update):
            rel = self._relation(message.relation_oid)
            before = self._old_image(rel, message.old, message.old_kind) if message.old is not None else None
            after = self._image(rel, message.new)
            if after[1] and before is not None and message.old_kind == "O":
                # REPLICA IDENTITY FULL: the old row carries every value, TOASTed ones too (the server
                # inlines them); an unchanged one is that value, so the update is a whole row.
                after = ({**after[0], **{n: before[n] for n in after[1] if n in before}},
                         [n for n in after[1] if n not in before])
            self._row(producer, rel, "u", before, after)
        elif isinstance(message, po.Delete):
            rel = self._relation(message.relation_oid)
            self._row(producer, rel, "d", self._old_image(rel, message.old, message.old_kind), None)
        elif isinstance(message, po.Commit):
            txn = self._require_txn("Commit")
            if txn.records:
                producer.produce(b"", envelope.encode_commit(
                    commit_lsn=txn.commit_lsn, end_lsn=message.end_lsn, xid=txn.xid, events=txn.records,
                    ts_ms=txn.ts_ms, tables=txn.tables), envelope.commit_headers(txn.commit_lsn, txn.origin))
                self.stats.transactions += 1
                self.stats.last_commit_ts_ms = txn.ts_ms
            self._pending.append((producer.produced, message.end_lsn))
            self._txn = None
        elif isinstance(message, po.Relation):
            self._relations[message.oid] = self._describe(message)
        elif isinstance(message, po.Truncate):
            for oid in message.relation_oids:
                self._row(producer, self._relation(oid), "t", None, None)
        elif isinstance(message, po.LogicalMessage):
            self._message(message, producer)
        elif isinstance(message, po.Origin):
            self._require_txn("Origin").origin = message.name
        elif isinstance(message, po.Type):
            pass  # types are read from the catalog
        else:
            raise MalformedMessageError(
                f"unexpected {type(message).__name__} message: splitter does not ask for streamed or "
                f"two-phase transactions")

    def _require_txn(self, what: str) -> _Txn:
        if self._txn is None:
            raise MalformedMessageError(f"pgoutput {what} outside a transaction")
        return self._txn

    def _relation(self, oid: int) -> _Relation:
        rel = self._relations.get(oid)
        if rel is None:
            raise MalformedMessageError(f"pgoutput change for relation {oid} before its Relation message")
        return rel

    def _describe(self, message: po.Relation) -> _Relation:
        """Column types as splitter reads them (built-ins exactly, with typmod; other types as text)."""
        wanted = [(c.type_oid, c.type_modifier) for c in message.columns
                  if c.type_oid < FIRST_USER_OID and (c.type_oid, c.type_modifier) not in self._types]
        if wanted:
            self._types.update(type_names(self._catalog_connection(), wanted))
        pk = row_key_columns(self._catalog_connection(), message.oid)
        if not pk:  # no primary key: the replica identity columns identify rows
            pk = {c.name for c in message.columns if c.is_key}
        columns = tuple(
            ColumnSchema(c.name, self._types.get((c.type_oid, c.type_modifier), "text"), c.name in pk)
            for c in message.columns)
        schema = RelationSchema(message.namespace, message.name, columns)
        return _Relation(schema, schema.header_bytes(), schema.qualified, tuple(c.name for c in message.columns),
                         tuple(c.name for c in message.columns if c.is_key))

    @classmethod
    def _old_image(cls, rel: _Relation, data: po.TupleData, kind: str | None) -> dict[str, str | None]:
        """The old row: whole with REPLICA IDENTITY FULL ('O'); else only its identity columns.

        A 'K' tuple carries every column, the non-key ones as NULL, so those NULLs are not values.
        """
        image = cls._image(rel, data)[0]
        if kind == "O":
            return image
        return {name: image.get(name) for name in rel.identity}

    @staticmethod
    def _image(rel: _Relation, data: po.TupleData) -> tuple[dict[str, str | None], list[str]]:
        if len(data) != len(rel.names):
            raise MalformedMessageError(
                f"pgoutput tuple for {rel.qualified} has {len(data)} columns, its relation {len(rel.names)}")
        if envelope.TEXT_OR_NULL.issuperset(map(type, data)):  # the common tuple, told apart in C
            return dict(zip(rel.names, data, strict=True)), []  # type: ignore[arg-type]  # text or NULL only
        image: dict[str, str | None] = {}
        unchanged: list[str] = []
        for name, value in zip(rel.names, data, strict=True):
            if value is po.UNCHANGED_TOAST:
                unchanged.append(name)
            elif isinstance(value, bytes):
                raise MalformedMessageError(f"binary value for {rel.qualified}.{name}: splitter reads text only")
            else:
                image[name] = value
        return image, unchanged

    def _row(self, producer: ChangeLogProducer, rel: _Relation, op: envelope.Op,
             before: dict[str, str | None] | None,
             after: tuple[dict[str, str | None], list[str]] | None) -> None:
        txn = self._require_txn("change")
        if self._drop_origin_rows and txn.origin is not None:
            return  # what origin 'none' does on the server (its commit then has no record either)
        after_image, unchanged = after if after is not None else (None, [])
        key, value = envelope.encode_row(
            database=self.settings.topology.source_database, relation=rel.schema, op=op, before=before,
            after=after_image, unchanged_toast=unchanged, commit_lsn=txn.commit_lsn, xid=txn.xid,
            sequence=txn.records, ts_ms=txn.ts_ms, now_ms=int(time.time() * 1000))
        producer.produce(key, value, envelope.row_headers(rel.header, rel.qualified, txn.commit_lsn, txn.origin))
        txn.records += 1
        txn.tables[rel.qualified] = txn.tables.get(rel.qualified, 0) + 1
        self.stats.records_produced += 1
        k = (rel.qualified, op)
        self.stats.by_table_op[k] = self.stats.by_table_op.get(k, 0) + 1

    def _message(self, message: po.LogicalMessage, producer: ChangeLogProducer) -> None:
        if not message.prefix.startswith(messages.SPLITTER):
            return
        # pgoutput sends a non-transactional message's *end* LSN, which is where the next record (often
        # a commit) starts; the message covers commits strictly before it, so its position is one less.
        lsn = message.lsn - 1
        ts_ms = int(time.time() * 1000)
        if message.transactional:
            txn = self._require_txn("transactional message")
            lsn, ts_ms = txn.commit_lsn, txn.ts_ms
        value = envelope.encode_message(lsn=lsn, prefix=message.prefix,
                                        content=message.content.decode(errors="replace"),
                                        transactional=message.transactional, ts_ms=ts_ms)
        producer.produce(b"", value, envelope.message_headers(lsn))
        self.stats.records_produced += 1
        if message.transactional:
            assert self._txn is not None
            self._txn.records += 1
        else:
            self._pending.append((producer.produced, message.lsn))

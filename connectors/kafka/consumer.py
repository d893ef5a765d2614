"""Reading the change log back, one service at a time: the worker's consumer.

Owns: the consumer's configuration (assigned a partition at an explicit offset; no group rebalancing,
because the checkpoint in the service database, not Kafka's committed offset, says where to resume;
group offsets are still committed so standard lag tools work), `LogRecord`, skimming the rows of tables
a worker does not keep (`Skimmed`: their headers and sequence only, in the one pass over what was
fetched), whether a read reached the end of the log (`at_end`), and telling a position the log no
longer holds (`OffsetGoneError`) from other read failures.  Must not: decode a record's value (beyond a
skimmed row's sequence), or decide where to read from (the worker does, from its checkpoint).

Other tables' rows are told apart by the record's key where it names the table (`envelope.ROW_KEY_PREFIX`):
such a row is dropped without its headers being read, since converting them was half of what a record
cost; the commit record's count of rows per table lets the worker check its own tables without them.  A
row of a log written before keys named the table comes back `Skimmed`, to be counted as before.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any, NamedTuple

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from connectors.kafka.clients import new_client
from connectors.kafka.producer import MAX_RECORD_BYTES
from splitter.core import envelope
from splitter.core.errors import FatalError, RetryableError

log = logging.getLogger(__name__)


class LogRecord(NamedTuple):
    """One record as read (a tuple: a frozen dataclass's `__init__` alone was 11 % of a catching-up worker)."""

    offset: int
    value: bytes | None
    headers: list[tuple[str, bytes | None]]  # as the client hands them (envelope.header_map reads them)


class Skimmed(NamedTuple):
    """A row record of a table the reader was told it does not keep: only what counting it in its transaction
    takes (its transaction's commit LSN, and its number in it: None when unreadable)."""

    offset: int
    lsn: int
    sequence: int | None


class OffsetGoneError(FatalError):
    """The position a reader was asked to read from is not in the log (deleted by retention, or the topic
    was recreated): what lay there cannot be read again."""

    def __init__(self, topic: str, offset: int | None, detail: str) -> None:
        where = f"offset {offset}" if offset is not None else "the requested position"
        super().__init__(f"{where} of topic {topic!r} is not in the log any more ({detail}): the records from "
                         f"there on that are gone were deleted by retention, or the topic was recreated")
        self.offset = offset


class ChangeLogConsumer:
    """A worker's reader of the change log, positioned explicitly."""

    def __init__(self, bootstrap: str, topic: str, group_id: str, partition: int = 0,
                 extra: dict[str, Any] | None = None) -> None:
        config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            # Never jump silently: a position the log no longer holds (retention deleted it, or the topic was
            # recreated) means changes this service has not applied are gone.
            "auto.offset.reset": "error",
            "fetch.max.bytes": MAX_RECORD_BYTES,
            # What one fetch asks for: the pre-fetch queue's memory is a few of them.  A record larger than
            # this still arrives whole (the client asks again with more room).
            "max.partition.fetch.bytes": 8 * 1024 * 1024,
            "fetch.wait.max.ms": 50,
            # A pre-fetch queue of 20,000 records bounds a worker's memory; the client fetches again 5 ms after
            # the queue went below it, not librdkafka's 1 s: with that back-off a worker read an uncompressed
            # log at 40,000 records/s instead of 200,000 and more.
            "queued.min.messages": 20_000,
            "fetch.queue.backoff.ms": 5,
            # Tells the worker it has read all the log holds (its cue to commit a batch now rather than
            # wait for more); the high watermark cannot tell, it is wrong on some brokers (see devtools).
            "enable.partition.eof": True,
        }
        config.update(extra or {})
        self.topic = topic
        self.partition = partition
        self._consumer = new_client(Consumer, config, "change-log consumer", extra)
        self._sought: int | None = None
        # The key prefixes of the tables last asked to keep (built again when the worker's tables change).
        self._keep: Collection[bytes] | None = None
        self._kept_keys: tuple[bytes, ...] = ()
        #: True once a read reached the end of what the log holds, until a record arrives after it.
        self.at_end = False
        #: Records the last read took from the log, those left out included (whether the worker is behind).
        self.taken = 0

    def seek(self, next_offset: int | None) -> None:
        """Read from `next_offset` (None: from the earliest record still kept)."""
        start = OFFSET_BEGINNING if next_offset is None or next_offset < 0 else next_offset
        self._sought = None if start == OFFSET_BEGINNING else start
        self.at_end = False
        self._consumer.assign([TopicPartition(self.topic, self.partition, start)])

    def read(self, max_records: int, timeout: float,
             keep: Collection[bytes] | None = None) -> list[LogRecord | Skimmed]:
        """The next records (waiting up to `timeout` for the first).  With `keep` (the tables a worker routes),
        row records of other tables are left out (or come back as `Skimmed`, in a log whose keys do not name
        the table), up to the first message record of the read: a message may open a backfill window on
        another table, so what follows it comes back whole."""
        try:
            # Wait for the first record only, then take what is already fetched: consume() alone waits for
            # `max_records` or the whole timeout on client versions before 2.13, a latency floor per read.
            first = self._consumer.poll(timeout)
            if first is None:
                self.taken = 0
                return []
            messages = [first]
            if max_records > 1:
                messages += self._consumer.consume(num_messages=max_records - 1, timeout=0)
        except KafkaException as exc:
            raise RetryableError(f"reading topic {self.topic!r} failed: {exc}") from exc
        out: list[LogRecord | Skimmed] = []
        at_end = self.at_end
        taken = 0
        if keep is not None and keep is not self._keep:
            self._keep, self._kept_keys = keep, envelope.row_key_prefixes(keep)
        kept_keys, row_key = self._kept_keys, envelope.ROW_KEY_PREFIX
        for m in messages:
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    at_end = True
                    continue
                if err.code() in (KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE):
                    raise OffsetGoneError(self.topic, self._sought, err.str())
                if err.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.UNKNOWN_TOPIC_ID):
                    raise OffsetGoneError(self.topic, None, f"the topic does not exist any more: {err.str()}")
                if err.fatal() or err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                    raise FatalError(f"reading topic {self.topic!r} failed: {err.str()}")
                raise RetryableError(f"reading topic {self.topic!r} failed: {err.str()}")
            at_end = False
            taken += 1
            if keep is not None:
                key = m.key()
                if key is not None and key.startswith(row_key) and not key.startswith(kept_keys):
                    continue  # another table's row: nothing of it is read
            # A consumed message's headers are a list of (name, bytes) pairs (the stubs also allow a produce-side
            # dict); passed on as they are: converting each pair cost the worker 15 % of its time.  Only what a
            # worker reads is taken: every client call costs, for every record of the log, in every worker.
            headers = m.headers() or []
            if keep is not None:
                # Most of the log is other services' rows: told apart here, in one pass, at the least cost.
                found = dict(headers)
                kind = found.get(envelope.KIND_HEADER)
                lsn = found.get(envelope.LSN_HEADER)
                if kind == envelope.KIND_ROW and found.get(envelope.TABLE_HEADER) not in keep and lsn \
                        and lsn.isdigit():
                    out.append(Skimmed(m.offset() or 0, int(lsn), envelope.row_sequence(m.value())))
                    continue
                if kind == envelope.KIND_MESSAGE:
                    keep = None
            out.append(LogRecord(m.offset() or 0, m.value(), headers))  # type: ignore[arg-type]
        self.at_end, self.taken = at_end, taken
        return out

    def commit(self, next_offset: int) -> None:
        """Record progress in Kafka for lag tools (a convenience, never read back by splitter)."""
        try:
            self._consumer.commit(offsets=[TopicPartition(self.topic, self.partition, next_offset)],
                                  asynchronous=True)
        except KafkaException as exc:
            log.debug("offset commit for lag tools failed: %s", exc)

    def watermarks(self, timeout: float = 10.0) -> tuple[int, int]:
        try:
            low, high = self._consumer.get_watermark_offsets(
                TopicPartition(self.topic, self.partition), timeout=timeout, cached=False)
        except KafkaException as exc:
            raise RetryableError(f"cannot read offsets of topic {self.topic!r}: {exc}") from exc
        return int(low), int(high)

    def close(self) -> None:
        self._consumer.close()

"""Random access to the change log for operator commands: what is at an offset, where a time or LSN is.

Owns: reading single records and ranges of the change-log partition with a throwaway consumer (no
group offsets are touched), the watermarks, the first and last record the log holds (`bounds`: asked of
the broker, then confirmed by reading only the last few records), the first offset at or after a time
(broker timestamp index, checked against the records there) or a source LSN (binary search on the LSN
header).  Must not: change any position a worker uses, or read the whole log to answer where it ends.

Brokers misreport: tansu 0.6 (the embedded broker of the tests and the demo) answers ListOffsets with
the *base offset of the last record batch* + 1 as its high watermark, not the next offset (measured:
100 records produced in batches of 1, 1, 30, 1, 50, 7, 1, 100 gave 1, 2, 3, 33, 34, 84, 91, 92 against
true ends 1, 2, 32, 33, 83, 90, 91, 191); its `offsets_for_times` answers a time after its last record
with offset 0 instead of "none" (-1, as Apache Kafka does), and often a time well inside the log too (0
for every time asked of a 100,000-record log with producer-set timestamps), else the first offset of the
record batch; its fetch past the end returns nothing (no error, no end-of-partition event).  So the end
is the watermark less one, read forward to the end-of-partition event (one batch at most), a time is
checked against the first and last records, and the time index's answer is checked against the records
around it (a binary search on timestamps when it is wrong).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from connectors.kafka.clients import client_config, new_client
from splitter.core import envelope
from splitter.core.errors import RetryableError

log = logging.getLogger(__name__)

# Longest a single consume() call waits; scan() loops over such slices.
_SLICE = 0.1
# Records read forward from the broker's answer to a time lookup to the first one at or after that time
# (tansu may answer with the first offset of the record batch: a batch at most); past this, a binary search.
_TIME_REFINE_LIMIT = 2_000


@dataclass(frozen=True)
class LogPoint:
    offset: int
    lsn: int | None
    timestamp_ms: int
    kind: bytes | None
    table: bytes | None


@dataclass(frozen=True)
class LogBounds:
    """The first and last record the partition holds (when they were read)."""

    first: LogPoint
    last: LogPoint

    @property
    def end(self) -> int:
        """The next offset to be written."""
        return self.last.offset + 1


class LogReader:
    def __init__(self, bootstrap: str, topic: str, partition: int = 0,
                 config: Mapping[str, Any] | None = None) -> None:
        self.topic = topic
        self.partition = partition
        self._consumer = new_client(Consumer, client_config(bootstrap, {
            "group.id": f"splitter-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            # Each read here is short and starts with a fresh fetch: at librdkafka's default (500 ms) a fetch
            # at the end of the log waits that long before the end-of-partition event, on every lookup.
            "fetch.wait.max.ms": 50,
        }, config), "change-log reader", config)

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> LogReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def scan(self, start: int | None, limit: int | None = None, timeout: float = 10.0) -> list[LogPoint]:
        """Records from `start` (None: the earliest kept) to the end of the partition, at most `limit`."""
        return list(self.points(start, timeout, limit))

    def points(self, start: int | None, timeout: float = 10.0, limit: int | None = None) -> Iterator[LogPoint]:
        """`scan` one record at a time, so a long range costs no memory (one scan per reader at a time)."""
        for point, _value in self.records(start, timeout, limit):
            yield point

    def records(self, start: int | None, timeout: float = 10.0,
                limit: int | None = None) -> Iterator[tuple[LogPoint, bytes | None]]:
        """`points`, each with the record's value."""
        self._consumer.assign([TopicPartition(self.topic, self.partition,
                                              OFFSET_BEGINNING if start is None else start)])
        # consume() returns only when it has num_messages or its timeout passed, even after the
        # partition-EOF event: ask in short slices and stop at EOF, or after `timeout` with nothing new.
        idle_until = time.monotonic() + timeout
        wanted = limit
        while wanted is None or wanted > 0:
            try:
                batch = self._consumer.consume(num_messages=5000 if wanted is None else min(5000, wanted),
                                               timeout=_SLICE)
            except KafkaException as exc:
                raise RetryableError(f"cannot read topic {self.topic!r}: {exc}") from exc
            if not batch:
                if time.monotonic() >= idle_until:
                    return
                continue
            idle_until = time.monotonic() + timeout
            for m in batch:
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        return
                    raise RetryableError(f"cannot read topic {self.topic!r}: {err.str()}")
                headers = envelope.header_map(m.headers())  # type: ignore[arg-type]
                raw_lsn = headers.get(envelope.LSN_HEADER)
                lsn = int(raw_lsn) if raw_lsn and raw_lsn.isdigit() else None
                ts = m.timestamp()
                yield (LogPoint(m.offset() or 0, lsn, ts[1] if ts else 0, headers.get(envelope.KIND_HEADER),
                                headers.get(envelope.TABLE_HEADER)), m.value())
                if wanted is not None:
                    wanted -= 1
                    if wanted == 0:
                        return

    def at(self, offset: int, timeout: float = 10.0) -> LogPoint | None:
        """The record at `offset`; None when none arrives within `timeout` (past the end, or deleted)."""
        points = self.scan(offset, limit=1, timeout=timeout)
        return points[0] if points and points[0].offset == offset else None

    def record(self, offset: int, timeout: float = 10.0) -> tuple[LogPoint, bytes | None] | None:
        """`at`, with the record's value."""
        for point, value in self.records(offset, timeout, 1):
            return (point, value) if point.offset == offset else None
        return None

    def watermarks(self, timeout: float = 10.0) -> tuple[int, int]:
        """(earliest offset kept, next offset to be written) as the broker reports them.

        The low one is exact on every broker tried; some misreport the high one after batches (tansu: the
        last batch's first offset + 1, lower than the truth), so `bounds` reads the last few records from it.
        """
        try:
            low, high = self._consumer.get_watermark_offsets(TopicPartition(self.topic, self.partition),
                                                             timeout=timeout, cached=False)
        except KafkaException as exc:
            raise RetryableError(f"cannot read offsets of topic {self.topic!r}: {exc}") from exc
        return int(low), int(high)

    def earliest(self) -> LogPoint | None:
        points = self.scan(None, limit=1)
        return points[0] if points else None

    def bounds(self, timeout: float = 10.0) -> LogBounds | None:
        """The first and last record of the partition (None: it holds none), without reading the log.

        The last is found from the broker's high watermark: the record before it is read, then forward to
        the end-of-partition event, which costs one record on Apache Kafka and one record batch on tansu
        (whose watermark is the last batch's first offset + 1, see the module docstring).  Records written
        meanwhile are read too, so `last` may be later than the watermark said."""
        low, high = self.watermarks(timeout)
        if high <= low:
            return None  # empty on every broker (tansu's high is at least its last batch's first offset + 1)
        # At the low watermark, not OFFSET_BEGINNING: librdkafka resolves a logical offset with a query of its
        # own first (measured 0.5 s on a new consumer); retention may have moved it since, then the slow way.
        first = self.at(low, timeout) or self.earliest()
        if first is None:
            return None
        last = self._last_from(max(first.offset, high - 1), timeout)
        if last is None:
            # No record just before the watermark: a broker whose watermark is past its last record.  None is
            # known to do this; the end is then found the slow way, by reading the whole log once.
            log.warning("topic %r: no record at offset %d, just before the high watermark the broker reports; "
                        "reading the log to its end instead", self.topic, high - 1)
            last = self._last_from(first.offset, timeout)
        return LogBounds(first, last or first)

    def _last_from(self, start: int, timeout: float) -> LogPoint | None:
        """The last record, reading from `start` to the end of the partition; None if `start` holds no record."""
        last: LogPoint | None = None
        for point in self.points(start, timeout):
            if last is None and point.offset != start:
                return None  # the broker moved the read elsewhere (offset reset): `start` is not in the log
            last = point
        return last

    def offset_for_time(self, timestamp_ms: int) -> int | None:
        """The broker's answer: the first offset whose timestamp is at or after `timestamp_ms` (None: none).

        Only a hint on tansu: it answers a time after the last record with 0, and a time inside a record
        batch with the batch's first offset.  `first_at_or_after_time` checks the answer."""
        try:
            found = self._consumer.offsets_for_times(
                [TopicPartition(self.topic, self.partition, timestamp_ms)], timeout=10)
        except KafkaException as exc:
            raise RetryableError(f"cannot look up a time in topic {self.topic!r}: {exc}") from exc
        offset = found[0].offset if found else -1
        return offset if offset >= 0 else None

    def first_at_or_after_time(self, timestamp_ms: int, bounds: LogBounds) -> int | None:
        """The first offset of the log whose record's timestamp is at or after `timestamp_ms`; None if the last
        record is older.  The broker's time index answers, and its answer is checked: the records from it are
        read up to the first one at or after the time (the rest of its record batch, on tansu), and the one
        before it must be older.  An answer that fails either check (tansu answers 0 for times well inside
        its log) gives way to a binary search on the records' timestamps."""
        if timestamp_ms > bounds.last.timestamp_ms:
            return None
        if timestamp_ms <= bounds.first.timestamp_ms:
            return bounds.first.offset
        found = self.offset_for_time(timestamp_ms)
        if found is None or not bounds.first.offset < found < bounds.end:
            return self._time_search(timestamp_ms, bounds.first.offset, bounds.end)
        before = self.at(found - 1)
        if before is None or before.timestamp_ms >= timestamp_ms:
            return self._time_search(timestamp_ms, bounds.first.offset, found)  # answered late
        for point in self.points(found, limit=_TIME_REFINE_LIMIT):
            if point.timestamp_ms >= timestamp_ms:
                return point.offset
            found = point.offset + 1
        return self._time_search(timestamp_ms, found, bounds.end)  # answered far too early

    def _time_search(self, timestamp_ms: int, low: int, high: int) -> int:
        """Binary search on [low, high) for the first record at or after `timestamp_ms`, for a broker whose
        time index gave no usable answer (the log's timestamps rise with its offsets: one producer writes it)."""
        answer = high - 1
        while low < high:
            mid = (low + high) // 2
            point = self.at(mid)
            if point is None or point.timestamp_ms >= timestamp_ms:
                answer, high = mid, mid
            else:
                low = mid + 1
        return answer

    def first_at_or_after_lsn(self, lsn: int, low: int, high: int) -> int | None:
        """Binary search on [low, high) for the first record whose LSN header is >= lsn."""
        answer = None
        while low < high:
            mid = (low + high) // 2
            point = self.at(mid)
            if point is None:
                high = mid
                continue
            if point.lsn is not None and point.lsn >= lsn:
                answer, high = mid, mid
            else:
                low = mid + 1
        return answer

    def transaction_start(self, offset: int, lsn: int, floor: int) -> int:
        """The first offset of the run of records with commit LSN `lsn` that ends at `offset`."""
        start = offset
        while start > floor:
            lo = max(floor, start - 256)
            for point in reversed(self.scan(lo, limit=start - lo)):
                if point.lsn != lsn:
                    return start
                start = point.offset
            if lo == floor:
                break
        return start

"""Random access to the change log for operator commands: what is at an offset, where a time or LSN is.

Owns: reading single records and ranges of the change-log partition with a throwaway consumer (no
group offsets are touched), finding the earliest offset still kept, the watermarks, the end of the log (by reading to
the partition end, since some Kafka-protocol brokers misreport high watermarks), the first offset at
or after a time (broker timestamp index) or a source LSN (binary search on the LSN header).  Must not:
change any position a worker uses.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from connectors.kafka.clients import client_config, new_client
from splitter.core import envelope
from splitter.core.errors import RetryableError

# Longest a single consume() call waits; scan() loops over such slices.
_SLICE = 0.1


@dataclass(frozen=True)
class LogPoint:
    offset: int
    lsn: int | None
    timestamp_ms: int
    kind: bytes | None
    table: bytes | None


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

        The low one is exact on every broker tried; some misreport the high one after batches (tansu: lower
        than the truth), so read it as "at least this much was written" only when it is 0 or a record past it
        cannot be read.
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

    def offset_for_time(self, timestamp_ms: int) -> int | None:
        try:
            found = self._consumer.offsets_for_times(
                [TopicPartition(self.topic, self.partition, timestamp_ms)], timeout=10)
        except KafkaException as exc:
            raise RetryableError(f"cannot look up a time in topic {self.topic!r}: {exc}") from exc
        offset = found[0].offset if found else -1
        return offset if offset >= 0 else None

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

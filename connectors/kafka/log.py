"""The Kafka change log: producing capture's records in order, and reading them back per service.

Owns: every confluent-kafka object splitter uses: the topic (created with one partition by
default, so an offset is one point in the source's history), the capture producer (idempotent,
acks=all, delivery reports counted in order so capture knows what is durable), and the worker
consumer (assigned a partition at an explicit offset; no group rebalancing, because the
checkpoint in the service database, not Kafka's committed offset, says where to resume; group
offsets are still committed so standard lag tools work).  Must not: interpret records.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, cast

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from splitter.core.errors import ConfigurationError, FatalError, RetryableError

log = logging.getLogger(__name__)

# Largest record the producer accepts: big TOASTed values travel whole.
MAX_RECORD_BYTES = 64 * 1024 * 1024


def _admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 10000})


def ensure_topic(bootstrap: str, topic: str, *, partitions: int = 1, replication: int = 1,
                 timeout: float = 30.0) -> None:
    """Create `topic` if it does not exist; refuse one whose partition count breaks the log's order."""
    admin = _admin(bootstrap)
    deadline = time.monotonic() + timeout
    while True:
        try:
            metadata = admin.list_topics(timeout=10)
            break
        except KafkaException as exc:
            if time.monotonic() > deadline:
                raise RetryableError(f"Kafka at {bootstrap} is unreachable: {exc}") from exc
            time.sleep(1)
    existing = metadata.topics.get(topic)
    if existing is not None and existing.error is None:
        if len(existing.partitions) != partitions:
            raise ConfigurationError(
                f"topic {topic!r} has {len(existing.partitions)} partitions; splitter's change log needs exactly "
                f"{partitions} (one ordered history of the source)")
        return
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=replication)])
    try:
        futures[topic].result(timeout=timeout)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else None
        if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
            return
        raise RetryableError(f"cannot create topic {topic!r} on {bootstrap}: {exc}") from exc
    # Metadata propagates asynchronously; wait until the partition has a leader.
    while time.monotonic() < deadline:
        md = admin.list_topics(topic=topic, timeout=10).topics.get(topic)
        if md is not None and md.error is None and md.partitions and all(p.leader >= 0 for p in md.partitions.values()):
            return
        time.sleep(0.2)
    raise RetryableError(f"topic {topic!r} was created but has no leader after {timeout:.0f}s")


class ChangeLogProducer:
    """Capture's producer.  `acked` counts records Kafka has acknowledged, in production order."""

    def __init__(self, bootstrap: str, topic: str, extra: dict[str, Any] | None = None) -> None:
        config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            # Idempotence keeps order and avoids duplicates across internal retries; the in-order
            # delivery count is what lets capture confirm the slot exactly.
            "enable.idempotence": True,
            "linger.ms": 5,
            "batch.num.messages": 10000,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
            "message.max.bytes": MAX_RECORD_BYTES,
            "message.timeout.ms": 0,  # never give up on a record silently: capture waits for the broker
        }
        # Reports only for failures: a Python callback per acknowledged record cost capture ~15 % of its time.
        # What was acknowledged is counted from the client's queue length instead (see `acked`).
        config["on_delivery"] = self._on_delivery
        config["delivery.report.only.error"] = True
        config.update(extra or {})
        self.topic = topic
        self._producer = Producer(config)
        self.produced = 0
        self._error: KafkaError | None = None

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None and self._error is None:
            self._error = err

    @property
    def acked(self) -> int:
        """Records Kafka has acknowledged, in production order (idempotence keeps that order).

        The client's queue length counts every record not yet acknowledged *and* every failure report not
        yet served by `poll`; serving one raises.  So a record that failed is never counted here: it is
        outstanding until its report is served, and then this raises instead of answering.
        """
        self.raise_delivery_error()
        return self.produced - len(self._producer)

    def produce(self, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        if self._error is not None:
            self.raise_delivery_error()
        while True:
            try:
                self._producer.produce(self.topic, value=value, key=key or None,
                                       headers=headers)  # type: ignore[arg-type]  # list is invariant
                break
            except BufferError:
                # Local queue full: serve delivery reports until there is room.
                self._producer.poll(0.1)
                self.raise_delivery_error()
        self.produced += 1

    def poll(self, timeout: float = 0.0) -> None:
        self._producer.poll(timeout)
        self.raise_delivery_error()

    def flush(self, timeout: float) -> bool:
        """Wait for every produced record to be acknowledged; False if `timeout` passed first."""
        remaining = self._producer.flush(timeout)
        self.raise_delivery_error()
        return remaining == 0

    def raise_delivery_error(self) -> None:
        if self._error is not None:
            err = self._error
            kind = RetryableError if err.retriable() or not err.fatal() else FatalError
            raise kind(f"Kafka did not accept a change-log record of topic {self.topic!r}: {err.str()}")

    @property
    def in_flight(self) -> int:
        return len(self._producer)


@dataclass(frozen=True)
class LogRecord:
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]  # as the client hands them (envelope.header_map reads them)
    timestamp_ms: int


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
            "fetch.max.bytes": 64 * 1024 * 1024,
            "max.partition.fetch.bytes": MAX_RECORD_BYTES,
            "fetch.wait.max.ms": 50,
            "queued.min.messages": 20000,
        }
        config.update(extra or {})
        self.topic = topic
        self.partition = partition
        self._consumer = Consumer(config)
        self._sought: int | None = None

    def seek(self, next_offset: int | None) -> None:
        """Read from `next_offset` (None: from the earliest record still kept)."""
        start = OFFSET_BEGINNING if next_offset is None or next_offset < 0 else next_offset
        self._sought = None if start == OFFSET_BEGINNING else start
        self._consumer.assign([TopicPartition(self.topic, self.partition, start)])

    def read(self, max_records: int, timeout: float) -> list[LogRecord]:
        try:
            # Wait for the first record only, then take what is already fetched: consume() alone waits for
            # `max_records` or the whole timeout on client versions before 2.13, a latency floor per read.
            first = self._consumer.poll(timeout)
            if first is None:
                return []
            messages = [first]
            if max_records > 1:
                messages += self._consumer.consume(num_messages=max_records - 1, timeout=0)
        except KafkaException as exc:
            raise RetryableError(f"reading topic {self.topic!r} failed: {exc}") from exc
        out = []
        for m in messages:
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                if err.code() in (KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE):
                    raise OffsetGoneError(self.topic, self._sought, err.str())
                unrecoverable = (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.TOPIC_AUTHORIZATION_FAILED)
                if err.fatal() or err.code() in unrecoverable:
                    raise FatalError(f"reading topic {self.topic!r} failed: {err.str()}")
                raise RetryableError(f"reading topic {self.topic!r} failed: {err.str()}")
            ts = m.timestamp()
            # A consumed message's headers are a list of (name, bytes) pairs (the stubs also allow a produce-side
            # dict); passed on as they are: converting each pair cost the worker 15 % of its time.
            headers = cast("list[tuple[str, bytes | None]]", m.headers() or [])
            out.append(LogRecord(m.offset() or 0, m.key(), m.value(), headers, ts[1] if ts else 0))
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

"""Producing change-log records in order: capture's producer (also the worker's dead-letter copy).

Owns: the producer's configuration (idempotent, acks=all, records up to `MAX_RECORD_BYTES`) and the
count of what Kafka has acknowledged, in production order, so capture knows what is durable.  Must not:
create topics (`admin`), read the log (`consumer`), or interpret records.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from splitter.core.errors import FatalError, RetryableError

# Largest record the producer accepts: big TOASTed values travel whole.
MAX_RECORD_BYTES = 64 * 1024 * 1024


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


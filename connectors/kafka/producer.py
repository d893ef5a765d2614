"""Producing change-log records in order: capture's producer (also the worker's dead-letter copy).

Owns: the producer's configuration (idempotent, acks=all, records up to `MAX_RECORD_BYTES`, never
creating a topic by producing to it), the count of what Kafka has acknowledged, in production order, so
capture knows what is durable, what the client last said about the broker (`client_error`, from its
error callback), and the record a failure is about (`delivery_errors` turns it and the client's error code
into a `RetryableError` or a `FatalError` naming the row and the setting to change).  Must not: create
topics (`admin`), read the log (`consumer`), interpret records, or decide that the broker is gone
(capture's broker watch does, from what is acknowledged).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from connectors.kafka.clients import new_client
from connectors.kafka.delivery_errors import FailedRecord, failure
from splitter.core.errors import FatalError, RetryableError

# Largest record the producer accepts: big TOASTed values travel whole.
MAX_RECORD_BYTES = 64 * 1024 * 1024
#: How long `produce` waits for room in a full local queue before giving up on this producer.
QUEUE_FULL_SECONDS = 30.0

def _error_of(exc: KafkaException) -> KafkaError | None:
    err = exc.args[0] if exc.args else None
    return err if isinstance(err, KafkaError) else None


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
            # A batch of change records (repeated keys, schema headers) compresses several times over: the
            # broker stores, and every worker fetches, a fraction of the bytes; capture produced 2.3x faster.
            "compression.type": "lz4",
            "batch.num.messages": 10000,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
            "message.max.bytes": MAX_RECORD_BYTES,
            "message.timeout.ms": 0,  # never give up on a record silently: capture waits for the broker
            # A topic deleted under capture must stay gone until capture looks at it: a broker that creates
            # it on a producer's metadata request would hand capture a new, empty log with default settings.
            "allow.auto.create.topics": False,
        }
        # Reports only for failures: a Python callback per acknowledged record cost capture ~15 % of its time.
        # What was acknowledged is counted from the client's queue length instead (see `acked`).
        config["on_delivery"] = self._on_delivery
        config["delivery.report.only.error"] = True
        config["error_cb"] = self._on_client_error
        config.update(extra or {})
        self.topic = topic
        self._producer = new_client(Producer, config, "change-log producer", extra)
        self.produced = 0
        self._error: KafkaError | None = None
        self._failed: FailedRecord | None = None  # the record `_error` is about (none for the client's own errors)
        self._config = config  # what failure messages quote (the producer's limit, sasl.username) and mask
        #: The client's last error report about the broker (transport failures, all brokers down) as (text,
        #: monotonic time), and when it last said no broker at all can be reached.  Capture's broker watch reads them.
        self.client_error: tuple[str, float] | None = None
        self.all_brokers_down_at: float | None = None
        self._connect_now()

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None and self._error is None:
            # Delivery reports carry no headers: the record's table is read back from its value.
            self._error, self._failed = err, FailedRecord.of(msg.key(), msg.value(), None)

    def _on_client_error(self, err: KafkaError) -> None:
        now = time.monotonic()
        self.client_error = (f"{err.name()}: {err.str()}", now)
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            self.all_brokers_down_at = now
        if err.fatal() and self._error is None:
            # The idempotent producer cannot go on (e.g. the broker lost its producer state): fail the next
            # call instead of waiting for acknowledgements that will never come.
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

    def _connect_now(self) -> None:
        """Open a broker connection now.  An idempotent producer asks for its producer id once a broker is up,
        else again on a 500 ms timer, and nothing is sent before it has one: a connection opened only by the
        first record (after capture's start-up checks) put 1 s before the first acknowledgement, 0.1-0.5 s with
        it opened here (measured on tansu 0.6.0).  A broker that does not answer is capture's to report."""
        with contextlib.suppress(KafkaException):
            self._producer.list_topics(self.topic, timeout=1.0)

    def produce(self, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        if self._error is not None:
            self.raise_delivery_error()
        full_since: float | None = None
        while True:
            try:
                self._producer.produce(self.topic, value=value, key=key or None,
                                       headers=headers)  # type: ignore[arg-type]  # list is invariant
                break
            except BufferError:
                # Local queue full: serve delivery reports until there is room, but not for ever (a broker
                # that does not answer must not freeze capture's loop).
                now = time.monotonic()
                full_since = full_since if full_since is not None else now
                if now - full_since >= QUEUE_FULL_SECONDS:
                    raise RetryableError(
                        f"the producer's queue for topic {self.topic!r} stayed full for {QUEUE_FULL_SECONDS:.0f}s: "
                        f"the broker does not acknowledge records") from None
                self.poll(0.1)
            except KafkaException as exc:  # refused before it left (larger than the producer's message.max.bytes)
                raise self._failure(exc, "producing to", FailedRecord.of(key, value, headers)) from exc
        self.produced += 1

    def poll(self, timeout: float = 0.0) -> None:
        try:
            self._producer.poll(timeout)
        except KafkaException as exc:
            raise self._failure(exc, "serving delivery reports of") from exc
        self.raise_delivery_error()

    def flush(self, timeout: float) -> bool:
        """Wait for every produced record to be acknowledged; False if `timeout` passed first."""
        try:
            remaining = self._producer.flush(timeout)
        except KafkaException as exc:
            raise self._failure(exc, "flushing") from exc
        self.raise_delivery_error()
        return remaining == 0

    def raise_delivery_error(self) -> None:
        if self._error is not None:
            raise failure(self._error, self.topic, self._failed, self._config, "delivering to")

    def _failure(self, exc: KafkaException, doing: str,
                 record: FailedRecord | None = None) -> RetryableError | FatalError:
        err = _error_of(exc)
        if err is None:
            return RetryableError(f"{doing} topic {self.topic!r} failed: {exc}")
        return failure(err, self.topic, record, self._config, doing)

    @property
    def in_flight(self) -> int:
        return len(self._producer)

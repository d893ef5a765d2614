"""Why Kafka did not take a record, in words an operator can act on: which client errors no retry mends.

Owns: the split of librdkafka's error codes into those no retry or new producer can mend (`NEVER_RECOVER`:
a FatalError, capture stops) and the rest (a RetryableError: capture restarts and sends again what the slot
has not confirmed), `FailedRecord` (what a failed record was: its table, its row key, its size; read from
its headers, or from its value when the client's delivery report carries no headers), and `failure`, the
error whose message names the record and the setting to change.  Must not: produce, poll or hold a
client, name any column value but the row key's (the primary key, never a secret), or show a secret of
the client's configuration.

Transient, retried (an explicit list only for the record; any code not in `NEVER_RECOVER` is retried):
`TRANSIENT`.  NOT_ENOUGH_REPLICAS(_AFTER_APPEND) is there: fewer in-sync replicas than
`min.insync.replicas` heals when a broker comes back, and acks=all must wait for it, never give up.
An unknown topic (UNKNOWN_TOPIC_OR_PART, _UNKNOWN_TOPIC, _UNKNOWN_PARTITION) after capture created the topic
means it was deleted: that is retried on purpose, because capture's start-up check of the change log
(splitter.pipeline.log_identity) is what stops it then, with the lost-log error that starts the new log
and names the recovery; a FatalError here would skip it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import KafkaError

from splitter.core import envelope
from splitter.core.errors import FatalError, MalformedMessageError, RetryableError
from splitter.core.kafka_config import mask_secret_values

#: A row key longer than this is cut in messages (keys are the primary key as JSON; a wide one is rare).
KEY_CHARS = 200

_TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})
_AUTHORIZATION = frozenset({KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED})
_UNKNOWN_TOPIC = frozenset({KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC,
                            KafkaError._UNKNOWN_PARTITION})

#: Errors no retry or new producer can mend: the operator must change permissions, sizes or settings.
NEVER_RECOVER = _TOO_LARGE | _AUTHORIZATION | frozenset({
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, KafkaError.INVALID_RECORD, KafkaError.INVALID_REQUIRED_ACKS,
    KafkaError.POLICY_VIOLATION, KafkaError.UNSUPPORTED_VERSION, KafkaError.UNSUPPORTED_FOR_MESSAGE_FORMAT,
    KafkaError.UNSUPPORTED_COMPRESSION_TYPE, KafkaError._INVALID_ARG,
})

#: Errors a broker coming back, a new leader or a new producer mends (the idempotent producer's fatal
#: sequence errors included: a new producer starts a new sequence, and the slot resends what is unconfirmed).
TRANSIENT = _UNKNOWN_TOPIC | frozenset({
    KafkaError.NOT_ENOUGH_REPLICAS, KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND, KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.FENCED_LEADER_EPOCH, KafkaError.UNKNOWN_LEADER_EPOCH,
    KafkaError.BROKER_NOT_AVAILABLE, KafkaError.REQUEST_TIMED_OUT, KafkaError.NETWORK_EXCEPTION,
    KafkaError.KAFKA_STORAGE_ERROR, KafkaError.THROTTLING_QUOTA_EXCEEDED, KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
    KafkaError.UNKNOWN_PRODUCER_ID, KafkaError.INVALID_PRODUCER_EPOCH, KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN, KafkaError._TIMED_OUT, KafkaError._MSG_TIMED_OUT, KafkaError._QUEUE_FULL,
})


@dataclass(frozen=True, slots=True)
class FailedRecord:
    """A record Kafka did not take, as a message names it."""

    what: str  # "a row of public.posts", "a commit record", ...
    key: str | None  # the row key for humans, cut to KEY_CHARS
    size: int  # bytes of key, value and (when known) headers

    @classmethod
    def of(cls, key: bytes | None, value: bytes | None,
           headers: Sequence[tuple[str, bytes | None]] | None) -> FailedRecord:
        size = len(key or b"") + len(value or b"") + sum(len(k) + len(v or b"") for k, v in headers or ())
        return cls(_what(value, envelope.header_map(headers)), _readable_key(key), size)

    def describe(self) -> str:
        key = f", key {self.key}" if self.key else ""
        return f"{self.what}{key}, {self.size} bytes"


def _what(value: bytes | None, headers: Mapping[str, bytes]) -> str:
    """What the record is: its table from the header, or (a delivery report has no headers) from its value."""
    kind = headers.get(envelope.KIND_HEADER)
    table = headers.get(envelope.TABLE_HEADER)
    if table is not None:
        return f"a row of {table.decode(errors='replace')}"
    if kind is None:
        try:
            return f"a row of {envelope.decode_row(value).table}"
        except MalformedMessageError:
            try:
                op = orjson.loads(value or b"{}").get("op")
            except (orjson.JSONDecodeError, AttributeError):
                op = None
            kind = {"commit": envelope.KIND_COMMIT, "message": envelope.KIND_MESSAGE}.get(str(op), b"")
    return f"a {kind.decode(errors='replace')} record" if kind else "a record"


def _readable_key(key: bytes | None) -> str | None:
    if not key:
        return None
    text = key.decode(errors="replace")
    return text if len(text) <= KEY_CHARS else text[:KEY_CHARS] + "…"


def failure(err: KafkaError, topic: str, record: FailedRecord | None, config: Mapping[str, Any],
            doing: str = "producing to") -> RetryableError | FatalError:
    """The splitter error for a client error, by its code (never its text), naming the record and the cure."""
    code = err.code()
    about = f" ({record.describe()})" if record is not None else ""
    head = f"{doing} topic {topic!r} failed{about}: {err.name()}: {err.str()}"
    if code in _UNKNOWN_TOPIC:
        text = (f"{head}. The topic does not exist any more (capture created it, so it was deleted): capture "
                f"restarts, and its check of the change log stops it with the lost-log error, which says what "
                f"was lost and how each service recovers")
        return RetryableError(mask_secret_values(text, config))
    if code not in NEVER_RECOVER:
        return RetryableError(mask_secret_values(head, config))
    text = f"{head}. No retry can deliver it: {_cure(code, topic, record, config)}"
    if record is not None:
        text += ("; the slot has not confirmed this record, so capture sends it again when started after the "
                 "change")
    return FatalError(mask_secret_values(text, config))


def _cure(code: int, topic: str, record: FailedRecord | None, config: Mapping[str, Any]) -> str:
    if code in _TOO_LARGE:
        size = f"{record.size} bytes" if record is not None else "the record's size"
        return (f"raise, to more than {size}, the topic's max.message.bytes (topic {topic!r}; splitter creates it "
                f"with topic.max.message.bytes of its Kafka configuration), the brokers' message.max.bytes (and "
                f"replica.fetch.max.bytes), and the producer's message.max.bytes (now "
                f"{config.get('message.max.bytes', 'librdkafka default')}; producer.message.max.bytes in "
                f"splitter's Kafka configuration)")
    if code in _AUTHORIZATION:
        user = config.get("sasl.username")
        principal = f"principal User:{user} (sasl.username)" if user else "principal capture connects as"
        return (f"grant the {principal} WRITE and DESCRIBE on topic {topic!r} (kafka-acls --add --allow-principal "
                f"... --operation Write --operation Describe --topic {topic}); an idempotent producer on a broker "
                f"older than 2.8 also needs IDEMPOTENT_WRITE on the cluster")
    return "change the topic, broker or producer setting the error names"

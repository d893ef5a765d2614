"""The message of a delivery failure: record bytes and a client error code in, the error capture stops with out.

Never-recover codes are FatalErrors naming the table, the row key, the record's size and the setting to change
(authorization: the principal and the topic, never the password); an unknown topic and the transient codes
are RetryableErrors (capture restarts; for a deleted topic its log check then stops it with the lost-log error).
"""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

from connectors.kafka.delivery_errors import KEY_CHARS, NEVER_RECOVER, TRANSIENT, FailedRecord, failure
from splitter.core import envelope
from splitter.core.envelope import ColumnSchema, RelationSchema
from splitter.core.errors import FatalError, RetryableError

TOPIC = "bento_social.changes"
POSTS = RelationSchema("public", "posts", (ColumnSchema("id", "varchar", True), ColumnSchema("content", "text", False)))
CONTENT = "private words " * 100  # a column value: never in a message


def _row(key_value: str = "7f3c") -> tuple[bytes, bytes, envelope.Headers]:
    key, value = envelope.encode_row(
        database="bento_social", relation=POSTS, op="c", before=None, after={"id": key_value, "content": CONTENT},
        unchanged_toast=[], commit_lsn=100, xid=5, sequence=0, ts_ms=1, now_ms=2)
    return key, value, envelope.row_headers(POSTS.header_bytes(), POSTS.qualified, 100)


def _size(key: bytes, value: bytes, headers: envelope.Headers | None) -> int:
    return len(key) + len(value) + sum(len(k) + len(v) for k, v in headers or ())


@pytest.mark.parametrize("code", [KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE])
@pytest.mark.parametrize("with_headers", [True, False], ids=["produce", "delivery-report"])
def test_too_large_names_table_key_size_and_the_size_settings(code: int, with_headers: bool) -> None:
    key, value, headers = _row()
    given = headers if with_headers else None  # a delivery report carries no headers: the value names the table
    error = failure(KafkaError(code), TOPIC, FailedRecord.of(key, value, given), {"message.max.bytes": 1_000_000})
    assert isinstance(error, FatalError)
    text = str(error)
    assert "public.posts" in text and '"id":"7f3c"' in text, text
    assert f"{_size(key, value, given)} bytes" in text, text
    assert "max.message.bytes" in text and "message.max.bytes" in text and "1000000" in text, text
    assert TOPIC in text and "private words" not in text, text


def test_a_long_key_is_cut() -> None:
    key, value, headers = _row("k" * 1000)
    text = str(failure(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), TOPIC, FailedRecord.of(key, value, headers), {}))
    shown = key.decode()
    assert shown[:KEY_CHARS] + "…" in text and shown[:KEY_CHARS + 1] not in text, text


@pytest.mark.parametrize("code", [KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED])
def test_authorization_names_principal_topic_and_grants_but_not_the_password(code: int) -> None:
    key, value, headers = _row()
    config = {"sasl.username": "splitter-capture", "sasl.password": "hunter2-secret"}
    err = KafkaError(code, "denied for hunter2-secret")  # even a client text holding it is masked
    error = failure(err, TOPIC, FailedRecord.of(key, value, headers), config)
    assert isinstance(error, FatalError)
    text = str(error)
    assert "User:splitter-capture" in text and "WRITE" in text and "DESCRIBE" in text and TOPIC in text, text
    assert "public.posts" in text and "hunter2-secret" not in text, text


def test_authorization_without_a_username_still_says_what_to_grant() -> None:
    text = str(failure(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED), TOPIC, None, {}))
    assert "WRITE" in text and TOPIC in text and "User:" not in text, text


@pytest.mark.parametrize("code", [KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC])
def test_an_unknown_topic_after_creation_is_the_lost_log_path(code: int) -> None:
    key, value, headers = _row()
    error = failure(KafkaError(code), TOPIC, FailedRecord.of(key, value, headers), {})
    assert isinstance(error, RetryableError) and not isinstance(error, FatalError)
    text = str(error)
    assert TOPIC in text and "deleted" in text and "lost-log" in text and "public.posts" in text, text


@pytest.mark.parametrize("code", [
    KafkaError.NOT_ENOUGH_REPLICAS, KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND, KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.REQUEST_TIMED_OUT, KafkaError._MSG_TIMED_OUT,
    KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
])
def test_transient_codes_are_retried(code: int) -> None:
    key, value, headers = _row()
    error = failure(KafkaError(code), TOPIC, FailedRecord.of(key, value, headers), {})
    assert isinstance(error, RetryableError) and not isinstance(error, FatalError), error
    assert code in TRANSIENT


def test_no_code_is_both_transient_and_never_recovering() -> None:
    assert not TRANSIENT & NEVER_RECOVER


def test_a_commit_record_is_named_by_its_kind() -> None:
    value = envelope.encode_commit(commit_lsn=100, end_lsn=120, xid=5, events=3, ts_ms=1,
                                   tables={"public.posts": 3})
    for headers in (envelope.commit_headers(100), None):
        text = str(failure(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), TOPIC, FailedRecord.of(b"", value, headers), {}))
        assert "a commit record" in text and "key" not in text.split("bytes")[0], text


def test_a_client_error_without_a_record_names_the_topic_and_the_cure() -> None:
    error = failure(KafkaError(KafkaError.CLUSTER_AUTHORIZATION_FAILED, fatal=True), TOPIC, None, {})
    assert isinstance(error, FatalError) and TOPIC in str(error) and "IDEMPOTENT_WRITE" in str(error), error

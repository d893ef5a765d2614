"""A worker's reader leaves other tables' rows out by their key alone, on a real broker.

The log is written with the project's encoders, as capture writes it, plus one row in the layout of the
previous release (its key the primary key alone): that row still comes back skimmed, to be counted as
before.  What comes back is checked against the offsets the test wrote.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson

from connectors.kafka.admin import ensure_topic
from connectors.kafka.consumer import ChangeLogConsumer, LogRecord, Skimmed
from connectors.kafka.producer import ChangeLogProducer
from splitter.core import envelope
from splitter.core.envelope import ColumnSchema, RelationSchema
from tests.conftest import KafkaServer

POSTS = RelationSchema("public", "posts", (ColumnSchema("id", "text", True), ColumnSchema("content", "text", False)))
TOPICS = RelationSchema("public", "topics", (ColumnSchema("id", "text", True), ColumnSchema("name", "text", False)))
LSN = 777


def _row(producer: ChangeLogProducer, relation: RelationSchema, row_id: str, sequence: int,
         legacy: bool = False) -> None:
    key, value = envelope.encode_row(database="db", relation=relation, op="c", before=None,
                                     after={"id": row_id, relation.columns[1].name: "x"}, unchanged_toast=(),
                                     commit_lsn=LSN, xid=1, sequence=sequence, ts_ms=1, now_ms=1)
    if legacy:
        # The primary key's object alone; its column named `table` (the old key then begins `{"table":`).
        key = orjson.dumps({"table": row_id})
    producer.produce(key, value, envelope.row_headers(relation.header_bytes(), relation.qualified, LSN))


def _read_all(consumer: ChangeLogConsumer, keep: set[bytes] | None) -> tuple[list[LogRecord | Skimmed], int]:
    """Everything from the start, and how many records the reads took from the log."""
    consumer.seek(None)
    got: list[LogRecord | Skimmed] = []
    taken = 0
    while not (consumer.at_end and got):
        got += consumer.read(2000, 1.0, keep=keep)
        taken += consumer.taken
    return got, taken


def test_other_tables_rows_are_left_out_and_a_legacy_row_comes_back_skimmed(
        kafka_server: KafkaServer, unique_name: Callable[[str], str]) -> None:
    topic = unique_name("topic")
    ensure_topic(kafka_server.bootstrap, topic)
    producer = ChangeLogProducer(kafka_server.bootstrap, topic)
    _row(producer, TOPICS, "t0", 0)                 # offset 0: another table's row
    _row(producer, POSTS, "p1", 1)                  # offset 1: kept
    _row(producer, TOPICS, "t2", 2)                 # offset 2: another table's row
    _row(producer, TOPICS, "t3", 3, legacy=True)    # offset 3: another table's, in the previous release's layout
    producer.produce(b"", envelope.encode_commit(commit_lsn=LSN, end_lsn=LSN + 1, xid=1, events=4, ts_ms=1,
                                                 tables={"public.topics": 3, "public.posts": 1}),
                     envelope.commit_headers(LSN))  # offset 4
    assert producer.flush(10.0)
    consumer = ChangeLogConsumer(kafka_server.bootstrap, topic, unique_name("group"))
    try:
        posts = {b"public.posts"}
        for _ in range(2):  # the second time with the key prefixes built for the same tables
            kept, taken = _read_all(consumer, posts)
            assert [(type(r).__name__, r.offset) for r in kept] == \
                [("LogRecord", 1), ("Skimmed", 3), ("LogRecord", 4)]
            assert taken == 5  # what was left out was taken from the log all the same
        skimmed = kept[1]
        assert isinstance(skimmed, Skimmed) and (skimmed.lsn, skimmed.sequence) == (LSN, 3)
        # Without `keep` (a backfill window is open) every record comes back whole.
        everything, _ = _read_all(consumer, None)
        assert [r.offset for r in everything if isinstance(r, LogRecord)] == [0, 1, 2, 3, 4]
        # The tables asked for are taken again when they change (a topology reload).
        topics, _ = _read_all(consumer, {b"public.topics"})
        assert [(type(r).__name__, r.offset) for r in topics] == \
            [("LogRecord", 0), ("LogRecord", 2), ("LogRecord", 3), ("LogRecord", 4)]
    finally:
        consumer.close()

"""Transactions are applied whole or not at all: a worker counts what it read of each source transaction.

A commit record carries how many records capture wrote for its transaction (rows of every table and
transactional messages) and how many rows of each table.  These tests write records straight into the
change log with the project's own producer and envelope encoders, as capture would, except that one
transaction's commit record claims rows that were never written.  Each runs on both layouts of the log:
today's (row keys name the table, so workers never read other tables' rows and check their own tables'
counts) and the one written before (row keys hold the primary key alone, commits only the whole count,
which workers check over every record, as a log written by the previous release still holds).  Real
workers against real service databases must stop on it (fatal, naming the transaction, its commit LSN and
its offsets) without applying any of it, also when part of it had already gone into the target transaction
(a large transaction applied in parts), and also under `on_error = "dead_letter"` (a log that lost a record
is not a row to set aside).  What came before it is applied; a complete transaction over the tables of
several services applies as before.

Expected rows and positions come from the test's own SQL and from the records it wrote.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import orjson
import psycopg
import pytest

from connectors.kafka.producer import ChangeLogProducer
from splitter.core import envelope
from splitter.core.envelope import RelationSchema, RowChange
from splitter.core.errors import FatalError
from splitter.core.exit_codes import FATAL as EXIT_FATAL
from splitter.core.lsn import lsn_to_str
from tests.conftest import KafkaServer
from tests.integration.test_replay import Pipeline, Stack, make_stack, pipelines, read_topic

__all__ = ["pipelines"]  # the fixture, imported so pytest finds it here


def _count(dsn: str, query: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def _sample(stack: Stack, table: bytes) -> tuple[RelationSchema, bytes, RowChange]:
    """The relation header and the last row change of `table` that capture wrote into the log."""
    found = [(h, v) for _, h, v, _ in read_topic(stack.settings.kafka_bootstrap, stack.settings.topic)
             if h.get(envelope.KIND_HEADER) == envelope.KIND_ROW and h.get(envelope.TABLE_HEADER) == table]
    assert found, f"no row record of {table!r} in the log"
    headers, value = found[-1]
    raw = headers[envelope.SCHEMA_HEADER]
    return RelationSchema.from_header(table.decode(), raw), raw, envelope.decode_row(value)


class Writer:
    """Writes source transactions into the change log as capture does (same producer, same encoders)."""

    def __init__(self, stack: Stack, layout: str) -> None:
        s = stack.settings
        self.database = s.topology.source_database
        self.producer = ChangeLogProducer(s.kafka_bootstrap, s.topic)
        self.legacy = layout == "legacy"

    def row(self, sample: tuple[RelationSchema, bytes, RowChange], new_id: str, *, lsn: int, xid: int,
            sequence: int) -> None:
        relation, raw, change = sample
        assert change.after is not None
        after = {**change.after, "id": new_id}
        key, value = envelope.encode_row(
            database=self.database, relation=relation, op="c", before=None, after=after, unchanged_toast=(),
            commit_lsn=lsn, xid=xid, sequence=sequence, ts_ms=int(time.time() * 1000),
            now_ms=int(time.time() * 1000))
        if self.legacy:
            key = orjson.dumps({"id": new_id})  # the primary key alone, as capture wrote it before
        self.producer.produce(key, value, envelope.row_headers(raw, relation.qualified, lsn))

    def commit(self, *, lsn: int, xid: int, events: int, tables: dict[str, int]) -> None:
        """The commit record capture writes for a transaction of `events` records, `tables` its rows per table."""
        ts_ms = int(time.time() * 1000)
        if self.legacy:
            value = orjson.dumps({"op": "commit", "txId": xid, "lsn": lsn, "end_lsn": lsn + 1, "events": events,
                                  "ts_ms": ts_ms})
        else:
            value = envelope.encode_commit(commit_lsn=lsn, end_lsn=lsn + 1, xid=xid, events=events, ts_ms=ts_ms,
                                           tables=tables)
        self.producer.produce(b"", value, envelope.commit_headers(lsn))

    def flush(self) -> None:
        assert self.producer.flush(10.0)


LAYOUTS = pytest.mark.parametrize("layout", ["tables", "legacy"])


@LAYOUTS
def test_a_transaction_that_does_not_add_up_is_refused_whole_and_what_came_before_applies(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], pipelines: list[Pipeline], layout: str) -> None:
    stack = make_stack(make_databases, kafka_server.bootstrap, unique_name, ["post", "topic"], scale=5,
                       on_error={"topic": "dead_letter"})  # post keeps on_error = "stop"
    pipeline = Pipeline(stack.settings)
    pipelines.append(pipeline)
    pipeline.start_capture()
    # Large transactions go into the post database in parts of 5 changes.
    pipeline.start_worker("post", dataclasses.replace(stack.settings, max_txn_changes=5))
    pipeline.start_worker("topic")
    stack.wait_caught_up(pipeline=pipeline)
    post_db, topic_db = stack.dsn("post"), stack.dsn("topic")

    # A complete source transaction over the tables of both services still applies (through capture).
    with psycopg.connect(stack.source) as conn, conn.transaction():
        conn.execute("INSERT INTO topics (id, name, color, created_at, updated_at) "
                     "VALUES ('multi-topic', 'Both', '#123', now(), now())")
        conn.execute("INSERT INTO posts (id, content, author_id, topic_id, created_at, updated_at) "
                     "SELECT 'multi-post-' || g, 'in one transaction', 'a', 'multi-topic', now(), now() "
                     "FROM generate_series(1, 12) g")
        conn.execute("UPDATE topics SET post_count = 12 WHERE id = 'multi-topic'")
    stack.wait_caught_up(pipeline=pipeline)
    assert _count(topic_db, "SELECT count(*) FROM topic.topics WHERE id = 'multi-topic' AND post_count = 12") == 1
    assert _count(post_db, "SELECT count(*) FROM post.posts WHERE starts_with(id, 'multi-post-')") == 12
    assert pipeline.running("post") and pipeline.running("topic"), pipeline.errors
    assert not pipeline.errors["post"] and not pipeline.errors["topic"], pipeline.errors

    # From here on only this test writes the log.
    pipeline.stop("capture")
    topics, posts = _sample(stack, b"public.topics"), _sample(stack, b"public.posts")
    good_lsn = stack.source_lsn() + 0x10000
    bad_lsn = good_lsn + 0x100
    good_xid, bad_xid = 990001, 990002
    writer = Writer(stack, layout)
    # A complete transaction over both services' tables ...
    writer.row(topics, "good-topic", lsn=good_lsn, xid=good_xid, sequence=0)
    writer.row(posts, "good-post", lsn=good_lsn, xid=good_xid, sequence=1)
    writer.commit(lsn=good_lsn, xid=good_xid, events=2, tables={"public.topics": 1, "public.posts": 1})
    # ... then one whose records do not add up: 12 posts (more than one part of 5 for the post worker) and
    # two topics, of which post number 6 and topic number 12 never reached the log.  Its commit record counts
    # all 14.
    for i in range(12):
        if i != 6:
            writer.row(posts, f"bad-post-{i}", lsn=bad_lsn, xid=bad_xid, sequence=i)
    writer.row(topics, "bad-topic-13", lsn=bad_lsn, xid=bad_xid, sequence=13)
    writer.commit(lsn=bad_lsn, xid=bad_xid, events=14, tables={"public.posts": 12, "public.topics": 2})
    writer.flush()
    bad = [(offset, h.get(envelope.TABLE_HEADER))
           for offset, h, _, _ in read_topic(stack.settings.kafka_bootstrap, stack.settings.topic)
           if h.get(envelope.LSN_HEADER) == str(bad_lsn).encode()]
    assert len(bad) == 13
    first, last = bad[0][0], bad[-1][0]
    # Where each worker's reading of it begins: its first record, or (when it never reads other tables' rows)
    # its first row of the worker's own tables.
    began = {"post": first, "topic": first if layout == "legacy" else
             next(offset for offset, table in bad if table == b"public.topics")}

    def assert_refused(service: str) -> None:
        assert pipeline.wait_exit(service, timeout=30) == EXIT_FATAL
        error = pipeline.errors[service][-1]
        assert isinstance(error, FatalError), error
        message = str(error)
        assert f"service {service}" in message, message
        assert f"xid {bad_xid}" in message, message
        assert lsn_to_str(bad_lsn) in message, message
        assert f"offsets {began[service]}..{last}" in message, message

    # Both stop there: the post worker (one of its own rows is missing, and it had applied parts of the
    # transaction) and the topic worker (its own row is missing; it dead-letters rejected rows, but a record
    # missing from the log is not one).
    assert_refused("post")
    assert_refused("topic")
    assert _count(post_db, "SELECT count(*) FROM post.posts WHERE starts_with(id, 'bad-post-')") == 0
    assert _count(topic_db, "SELECT count(*) FROM topic.topics WHERE starts_with(id, 'bad-topic-')") == 0
    assert _count(topic_db, "SELECT count(*) FROM splitter.dead_letters") == 0
    # The transaction before it is applied, and each checkpoint stands just before the refused one.
    assert _count(post_db, "SELECT count(*) FROM post.posts WHERE id = 'good-post'") == 1
    assert _count(topic_db, "SELECT count(*) FROM topic.topics WHERE id = 'good-topic'") == 1
    for service in ("post", "topic"):
        cp = stack.checkpoint(service)
        assert cp is not None and cp[1] == good_lsn and cp[0] == first - 1, (service, cp, first)

    # Started again, a worker reads the transaction again from its first record and refuses it again.
    pipeline.start_worker("post", dataclasses.replace(stack.settings, max_txn_changes=5))
    assert_refused("post")
    assert _count(post_db, "SELECT count(*) FROM post.posts WHERE starts_with(id, 'bad-post-')") == 0
    assert stack.checkpoint("post") == (first - 1, good_lsn)


@LAYOUTS
def test_a_copy_capture_sent_again_after_a_crash_counts_only_once(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], pipelines: list[Pipeline], layout: str) -> None:
    """Capture stopped half way through a transaction and sent it again whole: the first copy's records are
    not counted into the second (for the rows of other services' tables too, which the worker never reads)."""
    stack = make_stack(make_databases, kafka_server.bootstrap, unique_name, ["post", "topic"], scale=5)
    pipeline = Pipeline(stack.settings)
    pipelines.append(pipeline)
    pipeline.start_capture()
    pipeline.start_worker("post")
    pipeline.start_worker("topic")
    stack.wait_caught_up(pipeline=pipeline)
    stack.source_exec("INSERT INTO topics (id, name, color, created_at, updated_at) "
                      "VALUES ('sample-topic', 'S', '#000', now(), now())",
                      "INSERT INTO posts (id, content, author_id, topic_id, created_at, updated_at) "
                      "VALUES ('sample-post', 'S', 'a', 'sample-topic', now(), now())")
    stack.wait_caught_up(pipeline=pipeline)
    pipeline.stop("capture")
    topics, posts = _sample(stack, b"public.topics"), _sample(stack, b"public.posts")
    lsn, xid = stack.source_lsn() + 0x10000, 990003
    writer = Writer(stack, layout)
    # The incomplete copy: three topics rows and the first post row, no commit record.
    for i in range(3):
        writer.row(topics, f"again-topic-{i}", lsn=lsn, xid=xid, sequence=i)
    writer.row(posts, "again-post-3", lsn=lsn, xid=xid, sequence=3)
    # The whole copy: three topics rows, two post rows, its commit record.
    for i in range(3):
        writer.row(topics, f"again-topic-{i}", lsn=lsn, xid=xid, sequence=i)
    writer.row(posts, "again-post-3", lsn=lsn, xid=xid, sequence=3)
    writer.row(posts, "again-post-4", lsn=lsn, xid=xid, sequence=4)
    writer.commit(lsn=lsn, xid=xid, events=5, tables={"public.topics": 3, "public.posts": 2})
    writer.flush()
    deadline = time.monotonic() + 30
    while any((cp := stack.checkpoint(s)) is None or cp[1] < lsn for s in ("post", "topic")):
        assert time.monotonic() < deadline and pipeline.running("post") and pipeline.running("topic"), \
            pipeline.errors
        time.sleep(0.2)
    assert _count(stack.dsn("topic"), "SELECT count(*) FROM topic.topics WHERE starts_with(id, 'again-')") == 3
    assert _count(stack.dsn("post"), "SELECT count(*) FROM post.posts WHERE starts_with(id, 'again-')") == 2
    assert not pipeline.errors["post"] and not pipeline.errors["topic"], pipeline.errors

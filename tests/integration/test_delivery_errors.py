"""Delivery errors no retry can fix stop capture at once, naming the row; a topic deleted under it is a lost log.

Capture runs in-process under `run_with_retries` (as the CLI runs it) against the shared tansu broker.

A row wider than the producer's `message.max.bytes` (set through splitter's Kafka configuration,
`SPLITTER_KAFKA_PRODUCER_MESSAGE_MAX_BYTES`; tansu 0.6 does not enforce a topic's `max.message.bytes`, so the
producer's own limit is the one that refuses it, at produce time): capture stops with the fatal exit code,
without a retry, and its error names the table, the row's key, the record's size and the settings to raise;
the slot's confirmed position stays before the row's commit, so the row is sent again once the limit is
raised.  Before, the error said only "Broker: Message size too large" for the topic.

The change-log topic deleted under a running capture (and not created again): capture stops with the
fatal lost-log error naming the topic within a bounded time, never waits for ever.  (tansu acknowledges
records produced to a deleted topic, so there it is capture's broker watch that notices; on Apache Kafka the
record's UNKNOWN_TOPIC_OR_PART leads to the same restart and the same check.)
"""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

from splitter.core.errors import SplitterError
from splitter.core.exit_codes import FATAL
from splitter.core.kafka_config import build_kafka_config
from splitter.pipeline.capture import Capture
from splitter.pipeline.config import Settings
from splitter.pipeline.daemon import run_with_retries
from tests import harness
from tests.conftest import KafkaServer

LIMIT = 100_000  # the producer's message.max.bytes in the test: far above any generated row
WIDE = 300_000  # characters of the wide row's content


class _Run:
    """Capture under run_with_retries in a thread: its exit code, and every error an attempt ended with."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stop = threading.Event()
        self.errors: list[SplitterError] = []
        self.attempts = 0
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _attempt(self, stop: threading.Event) -> None:
        self.attempts += 1
        try:
            Capture(self.settings).run(stop)
        except SplitterError as exc:
            self.errors.append(exc)
            raise

    def _run(self) -> None:
        self.code = run_with_retries("capture", self._attempt, self.stop)

    def ended_within(self, seconds: float) -> bool:
        self.thread.join(seconds)
        return not self.thread.is_alive()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)


def _wait(what: str, cond: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _confirmed(conn: psycopg.Connection, slot: str) -> str | None:
    row = conn.execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
                       (slot,)).fetchone()
    return row[0] if row else None


def _confirmed_at_least(conn: psycopg.Connection, slot: str, lsn: str) -> bool:
    row = conn.execute("SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots WHERE slot_name = %s",
                       (lsn, slot)).fetchone()
    return bool(row and row[0])


def _streaming(env: harness.PipelineEnv, conn: psycopg.Connection, slot: str) -> Callable[[], bool]:
    """Every service copied (capture streams after the copies), and the slot there."""
    return lambda: _confirmed(conn, slot) is not None and all(lsn > 0 for lsn in env.applied_lsns().values())


def test_a_row_wider_than_the_producer_allows_stops_capture_naming_table_key_size_and_setting(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer, unique_name: Callable[[str], str],
        tmp_path: Path) -> None:
    env = harness.prepare(make_databases, kafka_server.bootstrap, unique_name, tmp_path, scale=20)
    settings = dataclasses.replace(env.settings(), kafka_config=build_kafka_config(
        {"SPLITTER_KAFKA_PRODUCER_MESSAGE_MAX_BYTES": str(LIMIT)}))
    run = _Run(settings)
    try:
        with psycopg.connect(env.source, autocommit=True) as conn:
            _wait("capture streaming", _streaming(env, conn, settings.slot), 120)
            # An ordinary change is delivered and confirmed: the limit refuses only what is over it.
            conn.execute("UPDATE topics SET post_count = post_count + 1 WHERE id = (SELECT min(id) FROM topics)")
            row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
            assert row is not None
            _wait("the ordinary change confirmed", lambda: _confirmed_at_least(conn, settings.slot, row[0]), 30)

            found = conn.execute("SELECT min(id) FROM posts").fetchone()
            assert found is not None
            post_id = str(found[0])
            with conn.transaction():
                conn.execute("UPDATE posts SET content = repeat('w', %s) WHERE id = %s", (WIDE, post_id))
                before = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
                width = conn.execute("SELECT octet_length(content) FROM posts WHERE id = %s", (post_id,)).fetchone()
            assert before is not None and width is not None

            assert run.ended_within(30), "capture still runs 30 s after a row it can never deliver"
            assert run.code == FATAL and run.attempts == 1, (run.code, run.attempts, run.errors)
            message = str(run.errors[-1])
            assert "public.posts" in message, message
            assert post_id in message, message
            sizes = [int(n) for n in re.findall(r"(\d+) bytes", message)]
            assert any(width[0] <= n <= width[0] + 4096 for n in sizes), (width[0], message)
            assert "max.message.bytes" in message and "message.max.bytes" in message, message
            assert str(LIMIT) in message, message  # the producer's limit, said with its value
            # The slot never passed the refused row: its commit is after `before`, so it is streamed again.
            row2 = conn.execute("SELECT confirmed_flush_lsn <= %s::pg_lsn FROM pg_replication_slots "
                                "WHERE slot_name = %s", (before[0], settings.slot)).fetchone()
            assert row2 is not None and row2[0], (_confirmed(conn, settings.slot), before[0])
    finally:
        run.close()


def test_the_change_log_deleted_under_capture_stops_it_with_the_lost_log_error(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer, unique_name: Callable[[str], str],
        tmp_path: Path) -> None:
    env = harness.prepare(make_databases, kafka_server.bootstrap, unique_name, tmp_path, scale=20)
    settings = env.settings()
    run = _Run(settings)
    try:
        with psycopg.connect(env.source, autocommit=True) as conn:
            _wait("capture streaming", _streaming(env, conn, settings.slot), 120)
            admin = AdminClient({"bootstrap.servers": kafka_server.bootstrap})
            admin.delete_topics([env.topic])[env.topic].result(30)
            # Changes keep coming while the log is gone: capture must not stream on as if nothing happened.
            for _ in range(5):
                conn.execute("UPDATE topics SET post_count = post_count + 1 WHERE id = (SELECT min(id) FROM topics)")
                time.sleep(0.2)
            assert run.ended_within(60), "capture still runs 60 s after its change log was deleted"
        assert run.code == FATAL, (run.code, run.errors)
        message = str(run.errors[-1])
        assert "the change log restarted behind slot" in message and env.topic in message, message
    finally:
        run.close()

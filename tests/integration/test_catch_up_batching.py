"""When a worker commits: at the end of what the log holds, or at its batch bounds while it is behind.

Real PostgreSQL, broker and capture.  A worker that is behind must keep filling its batch even when its
client's fetch queue runs dry for a moment (one target commit per batch is what catching up costs); a
worker that has read everything commits at once, however long `batch_max_wait` is.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from splitter.core.kafka_config import build_kafka_config
from splitter.pipeline.worker import Worker
from tests import expected
from tests.conftest import KafkaServer
from tests.harness import PipelineEnv, prepare
from tests.integration.test_large_transactions import InProcessWorker

SERVICE = "notification"
TRANSACTIONS = 200
ROWS = 100  # per transaction: a fetch of FETCH_BYTES holds more records than one read takes
FETCH_BYTES = 1_048_576

INSERT = ("INSERT INTO notifications (id, receiver_id, actor_id, content, action, is_sent, is_read, created_at, "
          "updated_at) SELECT md5(random()::text || g::text), receiver_id, actor_id, content, action, is_sent, "
          "is_read, now(), now() FROM notifications CROSS JOIN generate_series(1, %(rows)s) AS g LIMIT %(rows)s")


@pytest.fixture
def env(make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], tmp_path: Path) -> Iterator[PipelineEnv]:
    pipeline = prepare(make_databases, kafka_server.bootstrap, unique_name, tmp_path, scale=10)
    pipeline.start_capture()
    try:
        yield pipeline
    finally:
        pipeline.stop_all()


def _wait_published(env: PipelineEnv, timeout: float = 60) -> None:
    """Until capture has confirmed everything the source wrote so far (it is all in the log)."""
    target = env.source_lsn()
    deadline = time.monotonic() + timeout
    with psycopg.connect(env.source, autocommit=True) as conn:
        while True:
            row = conn.execute("SELECT confirmed_flush_lsn - '0/0'::pg_lsn FROM pg_replication_slots "
                               "WHERE slot_name = %s", (env.slot,)).fetchone()
            if row is not None and row[0] is not None and int(row[0]) >= target:
                return
            assert time.monotonic() < deadline, "capture did not publish the backlog"
            time.sleep(0.05)


def test_a_worker_behind_fills_its_batch_across_a_dry_fetch_queue(env: PipelineEnv) -> None:
    # The backlog: transactions written apart while capture streams, so that the broker holds one record batch
    # per transaction.
    _wait_published(env)
    with psycopg.connect(env.source, autocommit=True) as src:
        for _ in range(TRANSACTIONS):
            src.execute(INSERT, {"rows": ROWS})
            time.sleep(0.01)
    _wait_published(env)
    # A client that fetches a megabyte at a time (more than a read takes) and waits 60 ms before the next fetch:
    # its queue is empty for longer than a read waits, again and again, while most of the backlog is unread.
    slow_fetch = build_kafka_config({
        "SPLITTER_KAFKA_CONSUMER_QUEUED_MIN_MESSAGES": "1",
        "SPLITTER_KAFKA_CONSUMER_FETCH_QUEUE_BACKOFF_MS": "60",
        "SPLITTER_KAFKA_CONSUMER_MAX_PARTITION_FETCH_BYTES": str(FETCH_BYTES),
        "SPLITTER_KAFKA_CONSUMER_FETCH_MAX_BYTES": str(FETCH_BYTES),
    })
    settings = dataclasses.replace(env.settings(), kafka_config=slow_fetch, batch_max_rows=1_000_000,
                                   catch_up_batch_wait=120.0)
    worker = InProcessWorker(Worker(settings, SERVICE))
    try:
        env.wait_caught_up(timeout=120, services=[SERVICE])
        stats = worker.worker.stats
        # Before the fix every empty read committed what was in hand: one commit per fetch here.
        assert stats.batches <= 2, f"{stats.batches} target commits for a backlog read in one go"
        with psycopg.connect(env.source) as src, psycopg.connect(env.service_dsn(SERVICE)) as tgt:
            expected.assert_service_matches(src, tgt, SERVICE)
    finally:
        worker.close()


def test_a_worker_at_the_end_of_the_log_commits_at_once_whatever_its_batch_wait(env: PipelineEnv) -> None:
    settings = dataclasses.replace(env.settings(), batch_max_rows=1_000_000, batch_max_wait=120.0,
                                   catch_up_batch_wait=120.0)
    worker = InProcessWorker(Worker(settings, SERVICE))
    try:
        env.wait_caught_up(timeout=120, services=[SERVICE])
        for _ in range(3):
            with psycopg.connect(env.source, autocommit=True) as src:
                src.execute(INSERT, {"rows": 1})
            # Well under batch_max_wait: the worker read all the log held, so it committed.
            env.wait_caught_up(timeout=15, services=[SERVICE])
        with psycopg.connect(env.source) as src, psycopg.connect(env.service_dsn(SERVICE)) as tgt:
            expected.assert_service_matches(src, tgt, SERVICE)
    finally:
        worker.close()

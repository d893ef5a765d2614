"""Source transactions larger than a worker holds in memory (real PostgreSQL and broker).

A worker applies such a transaction in parts inside one target transaction and commits it with its
commit record: readers of the service database see all of it or none, and the worker's memory is
bounded by `max_txn_changes`, not by the transaction.  A hold that arrives while a transaction is
half read resumes it from its first record.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from connectors.pg.state.control import HoldControl
from splitter.pipeline.worker import Worker
from tests import expected
from tests.conftest import KafkaServer
from tests.harness import PipelineEnv, prepare

SERVICES = ("notification", "post")

# One transaction: copies of every notification (new keys), a content change of every post that leaves
# the TOASTed ones' content out of the log, and deletes of some of the copies made earlier in it.
BIG_TRANSACTION = [
    "INSERT INTO notifications (id, receiver_id, actor_id, content, action, is_sent, is_read, created_at, updated_at) "
    "SELECT md5(n.id || g::text), receiver_id, actor_id, content, action, is_sent, is_read, created_at, updated_at "
    "FROM notifications n CROSS JOIN generate_series(1, %(copies)s) AS g",
    "UPDATE posts SET liked_count = coalesce(liked_count, 0) + 1, updated_at = now()",
    "DELETE FROM notifications WHERE id IN (SELECT md5(id || '1') FROM notifications LIMIT 50)",
]


class InProcessWorker:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.worker.run(self.stop)
        except BaseException as exc:  # surfaced by the test
            self.errors.append(exc)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.errors, self.errors


@pytest.fixture
def env(make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], tmp_path: Path) -> Iterator[PipelineEnv]:
    pipeline = prepare(make_databases, kafka_server.bootstrap, unique_name, tmp_path, scale=40)
    pipeline.start_capture()
    try:
        yield pipeline
    finally:
        pipeline.stop_all()


def _count(dsn: str, table: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # test-owned literal table names
        assert row is not None
        return int(row[0])


def test_a_transaction_over_the_memory_bound_is_applied_whole_and_atomically(env: PipelineEnv) -> None:
    settings = dataclasses.replace(env.settings(), max_txn_changes=50)
    with psycopg.connect(env.source, autocommit=True) as src:
        # Incompressible, so it is stored out of line: the big transaction's update leaves it out of the log.
        src.execute("UPDATE posts SET content = (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 400) g) "
                    "WHERE id = (SELECT min(id) FROM posts)")
    posts = _count(env.source, "posts")
    assert posts > 50
    workers = {s: InProcessWorker(Worker(settings, s)) for s in SERVICES}
    try:
        env.wait_caught_up(timeout=120, services=list(SERVICES))
        target = env.service_dsn("notification")
        before = _count(target, "notification.notifications")
        seen: set[int] = set()
        stop_reading = threading.Event()

        def read_counts() -> None:  # a service reading its database while the transaction is applied
            while not stop_reading.is_set():
                seen.add(_count(target, "notification.notifications"))

        reader = threading.Thread(target=read_counts)
        reader.start()
        with psycopg.connect(env.source) as src, src.transaction():
            for statement in BIG_TRANSACTION:
                src.execute(statement, {"copies": 6})
        env.wait_caught_up(timeout=120, services=list(SERVICES))
        stop_reading.set()
        reader.join(30)
        after = _count(target, "notification.notifications")
        assert after > before + 200
        assert seen <= {before, after}, f"a reader saw part of the transaction: {sorted(seen)}"
        assert len(seen) == 2, "the reader saw the database before and after"
        for service in SERVICES:
            assert workers[service].worker.stats.transactions_applied_in_parts == 1, service
        with psycopg.connect(env.source) as src:
            for service in SERVICES:
                with psycopg.connect(env.service_dsn(service)) as tgt:
                    expected.assert_service_matches(src, tgt, service)
    finally:
        for worker in workers.values():
            worker.close()


def test_a_worker_stopped_in_the_middle_of_a_large_transaction_applies_it_once_after(env: PipelineEnv) -> None:
    settings = dataclasses.replace(env.settings(), max_txn_changes=150)
    target = env.service_dsn("notification")
    first = InProcessWorker(Worker(settings, "notification"))
    try:
        env.wait_caught_up(timeout=120, services=["notification"])
        before = _count(target, "notification.notifications")
        with psycopg.connect(env.source) as src, src.transaction():
            src.execute(BIG_TRANSACTION[0], {"copies": max(1, 30_000 // _count(env.source, "notifications"))})
        deadline = time.monotonic() + 60
        while not (first.worker._open is not None and first.worker._open.applied_in_parts):
            assert time.monotonic() < deadline, "the worker never applied a part"
            time.sleep(0.005)
    finally:
        first.close()
    # Parts applied but not committed went with the session.
    assert _count(target, "notification.notifications") == before
    restarted = InProcessWorker(Worker(settings, "notification"))
    try:
        env.wait_caught_up(timeout=120, services=["notification"])
        with psycopg.connect(env.source) as src, psycopg.connect(target) as tgt:
            expected.assert_service_matches(src, tgt, "notification")
    finally:
        restarted.close()


def test_a_hold_requested_while_a_transaction_is_half_read_resumes_it_whole(env: PipelineEnv) -> None:
    # This transaction is held in memory whole, and read in many reads.
    settings = dataclasses.replace(env.settings(), max_txn_changes=1_000_000)
    worker = InProcessWorker(Worker(settings, "notification"))
    try:
        env.wait_caught_up(timeout=120, services=["notification"])
        with psycopg.connect(env.source) as src, src.transaction():
            src.execute(BIG_TRANSACTION[0], {"copies": 1})
        rows = _count(env.source, "notifications")
        # A hold point the big transaction commits after, asked for once the worker is reading it (as a
        # verify's request can land while a transaction that committed after its point is being read).
        hold_at = env.source_lsn()
        with psycopg.connect(env.source) as src, src.transaction():
            src.execute(BIG_TRANSACTION[0].replace("md5(n.id || g::text)", "md5(n.id || 'h' || g::text)"),
                        {"copies": max(1, 50_000 // rows)})
        deadline = time.monotonic() + 60
        while not (worker.worker._open is not None and len(worker.worker._open.changes) > 2500):
            assert time.monotonic() < deadline, "the worker never was in the middle of the transaction"
            time.sleep(0.002)
        control = HoldControl(env.service_dsn("notification"), "notification")
        try:
            control.request(hold_at)
            deadline = time.monotonic() + 60
            while control.state().paused_lsn is None:
                assert time.monotonic() < deadline, "the worker did not hold"
                time.sleep(0.05)
        finally:
            control.release()
        env.wait_caught_up(timeout=120, services=["notification"])
        with psycopg.connect(env.source) as src, psycopg.connect(env.service_dsn("notification")) as tgt:
            expected.assert_service_matches(src, tgt, "notification")
    finally:
        worker.close()

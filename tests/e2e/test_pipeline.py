"""The whole pipeline as production runs it: real processes, a real broker, a realistic workload.

Every test computes the expected service tables with its own SQL (tests/expected.py), never with
splitter's rendering code.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

from devtools.embedded.kafka import EmbeddedKafka
from devtools.workload.driver import Workload
from splitter.core.lsn import str_to_lsn
from tests import expected
from tests.conftest import KafkaServer
from tests.harness import PipelineEnv, prepare

SERVICES = ("auth", "user", "post", "topic", "comment", "notification", "interaction")


class InvariantReader(threading.Thread):
    """Polls user_db while the pipeline applies: users.follower_count must always equal its followers rows.

    The workload keeps that invariant in the source inside each follow/unfollow transaction, so a
    reader ever seeing it broken would have seen a source transaction half-applied.
    """

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.stop = threading.Event()
        self.reads = 0
        self.violations = 0

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stop.is_set():
                try:
                    with conn.transaction():
                        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                        self.violations += expected.user_db_invariant_violations(conn)
                    self.reads += 1
                except psycopg.errors.UndefinedTable:
                    pass  # the initial copy has not created the state yet
                time.sleep(0.05)


def _env(make_databases: Callable[..., dict[str, str]], kafka: str, unique_name: Callable[[str], str],
         tmp_path: Path, scale: int = 200) -> PipelineEnv:
    return prepare(make_databases, kafka, unique_name, tmp_path, scale=scale)


def test_run_daemon_converges_under_workload_and_stops_cleanly(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], tmp_path: Path) -> None:
    env = _env(make_databases, kafka_server.bootstrap, unique_name, tmp_path)
    reader = InvariantReader(env.dsns["user_db"])
    daemon = env.start("run", "run")
    try:
        env.wait_caught_up(timeout=120)  # the initial copy, then the stream
        reader.start()
        workload = Workload(env.source, seed=7, threads=3)
        stop = threading.Event()
        runner = threading.Thread(target=workload.run, args=(stop,))
        runner.start()
        time.sleep(6)
        workload.truncate_once("post_saves")
        time.sleep(6)
        stop.set()
        runner.join(60)
        assert sum(workload.counts().values()) > 100
        env.wait_caught_up(timeout=120)
        env.assert_all_match()
        reader.stop.set()
        reader.join(10)
        assert reader.reads > 20
        assert reader.violations == 0, "a source transaction was visible half-applied in user_db"

        # SIGTERM stops the whole tree within seconds.
        started = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
        assert time.monotonic() - started < 20

        # Writes while stopped are picked up exactly where it left off.
        Workload(env.source, seed=8, threads=2).run_for(3)
        env.start("run", "run")
        env.wait_caught_up(timeout=120)
        env.assert_all_match()
    finally:
        reader.stop.set()
        env.stop_all()


def test_sigkill_stress_converges_exactly(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], tmp_path: Path) -> None:
    env = _env(make_databases, kafka_server.bootstrap, unique_name, tmp_path)
    env.start_capture()
    for service in SERVICES:
        env.start_worker(service)
    rng = random.Random(11)
    kills = 0
    try:
        env.wait_caught_up(timeout=120)
        workload = Workload(env.source, seed=3, threads=3)
        stop = threading.Event()
        runner = threading.Thread(target=workload.run, args=(stop,))
        runner.start()
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline or kills < 12:
            time.sleep(rng.uniform(0.3, 2.0))
            name = rng.choice(["capture", "capture", *(f"worker-{s}" for s in SERVICES)])
            env.kill(name)
            kills += 1
            if name == "capture":
                env.start_capture()
            else:
                env.start_worker(name.removeprefix("worker-"))
        stop.set()
        runner.join(60)
        env.wait_caught_up(timeout=180)
        env.assert_all_match()
        assert kills >= 10

        # Replaying already-applied changes changes nothing: rewind a worker's log offset (not its
        # LSN) and restart it; no row may be rewritten (xmin unchanged) and the checkpoint comes back.
        dsn = env.service_dsn("post")
        env.kill("worker-post")
        with psycopg.connect(dsn, autocommit=True) as conn:
            before = conn.execute("SELECT id, xmin::text FROM post.posts ORDER BY id").fetchall()
            conn.execute("UPDATE splitter.checkpoints SET kafka_offset = 0 WHERE service = 'post'")
        env.start_worker("post")
        time.sleep(8)
        env.wait_caught_up(timeout=60, services=["post"])
        with psycopg.connect(dsn, autocommit=True) as conn:
            after = conn.execute("SELECT id, xmin::text FROM post.posts ORDER BY id").fetchall()
            offset = conn.execute("SELECT kafka_offset FROM splitter.checkpoints WHERE service = 'post'").fetchone()
        assert after == before
        assert offset is not None and offset[0] > 0
    finally:
        env.stop_all()


def _slot_confirmed(dsn: str, slot: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
                           (slot,)).fetchone()
    assert row is not None and row[0] is not None
    return str_to_lsn(row[0])


def test_slot_never_passes_what_the_broker_has_not_acknowledged(
        make_databases: Callable[..., dict[str, str]], unique_name: Callable[[str], str], tmp_path: Path) -> None:
    with EmbeddedKafka() as broker:  # its own broker: this test freezes it
        env = _env(make_databases, broker.bootstrap, unique_name, tmp_path, scale=50)
        env.start_capture()
        try:
            deadline = time.monotonic() + 60
            while True:  # the slot exists once the initial copy is done
                try:
                    _slot_confirmed(env.source, env.slot)
                    break
                except AssertionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            time.sleep(3)
            assert broker.pid is not None
            broker_pid = broker.pid
            os.kill(broker_pid, signal.SIGSTOP)
            try:
                frozen_at = env.source_lsn()  # every change of the workload commits after this
                Workload(env.source, seed=5, threads=2).run_for(4)
                written_to = env.source_lsn()
                time.sleep(4)
                # Nothing written while the broker could not acknowledge may be confirmed.
                assert _slot_confirmed(env.source, env.slot) <= frozen_at
                assert written_to > frozen_at + 10_000
            finally:
                os.kill(broker_pid, signal.SIGCONT)
            deadline = time.monotonic() + 60
            while _slot_confirmed(env.source, env.slot) < written_to:
                assert time.monotonic() < deadline, env.logs()
                time.sleep(0.5)
        finally:
            env.stop_all()


def test_busy_unpublished_tables_do_not_make_the_slot_hold_wal(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], tmp_path: Path) -> None:
    env = _env(make_databases, kafka_server.bootstrap, unique_name, tmp_path, scale=50)
    env.start_capture()
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _slot_confirmed(env.source, env.slot)
                break
            except AssertionError:
                assert time.monotonic() < deadline
                time.sleep(0.5)
        with psycopg.connect(env.source, autocommit=True) as conn:
            conn.execute("CREATE TABLE audit_noise (id bigserial PRIMARY KEY, payload text)")
            for _ in range(20):
                conn.execute("INSERT INTO audit_noise (payload) SELECT repeat('x', 200) FROM generate_series(1, 5000)")
        written_to = env.source_lsn()
        deadline = time.monotonic() + 30
        while _slot_confirmed(env.source, env.slot) < written_to:
            assert time.monotonic() < deadline, "the slot kept WAL of unpublished tables:\n" + env.logs()
            time.sleep(0.5)
        with psycopg.connect(env.source, autocommit=True) as conn:
            row = conn.execute(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn) FROM pg_replication_slots "
                "WHERE slot_name = %s", (env.slot,)).fetchone()
        assert row is not None and row[0] < 1_000_000
    finally:
        env.stop_all()


"""Online backfill of one table while the pipeline streams and the source takes writes (DBLog watermarks)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

from splitter.online_backfill import run_backfill
from splitter.workload import Workload
from tests import expected
from tests.conftest import KafkaServer
from tests.harness import prepare

SERVICES = ("auth", "user", "post", "topic", "comment", "notification", "interaction")


def test_wiped_table_is_rebuilt_under_load_and_a_crash_resumes(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], tmp_path: Path) -> None:
    env = prepare(make_databases, kafka_server.bootstrap, unique_name, tmp_path, scale=300)
    env.start_capture()
    for service in SERVICES:
        env.start_worker(service)
    try:
        env.wait_caught_up(timeout=120)
        post_dsn = env.service_dsn("post")
        with psycopg.connect(post_dsn, autocommit=True) as conn:
            conn.execute("DELETE FROM post.posts")  # wiped by mistake
        workload = Workload(env.source, seed=21, threads=2)
        stop = threading.Event()
        runner = threading.Thread(target=workload.run, args=(stop,))
        runner.start()
        settings = env.settings()

        # A crash half way: stop after the second chunk, then resume from the last applied chunk.
        class Crash(Exception):
            pass

        def crash_after_two(done: int, total: int, elapsed: float) -> None:
            if done >= 2 * 100:
                raise Crash

        with contextlib.suppress(Crash):
            run_backfill(settings, "post", "posts", chunk_rows=100, progress=crash_after_two)
        with psycopg.connect(post_dsn, autocommit=True) as conn:
            state = conn.execute("SELECT id, chunks_done, status FROM splitter.backfills").fetchall()
        assert len(state) == 1 and state[0][1] == 2 and state[0][2] == "running"
        result = run_backfill(settings, "post", "posts", chunk_rows=100)
        assert result.job_id == state[0][0], "the second run resumed the same job"
        assert result.chunks > 2
        time.sleep(2)
        stop.set()
        runner.join(60)
        env.wait_caught_up(timeout=120)
        env.assert_all_match()
        with psycopg.connect(post_dsn, autocommit=True) as conn:
            done = conn.execute("SELECT status, rows_copied + rows_skipped FROM splitter.backfills").fetchone()
            leftovers = conn.execute("SELECT count(*) FROM splitter.backfill_rows").fetchone()
        assert done is not None and done[0] == "done"
        assert leftovers == (0,)
    finally:
        env.stop_all()


def test_verify_after_backfill_reports_no_differences(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], tmp_path: Path) -> None:
    env = prepare(make_databases, kafka_server.bootstrap, unique_name, tmp_path, scale=100)
    env.start_capture()
    env.start_worker("topic")
    try:
        env.wait_caught_up(timeout=120, services=["topic"])
        with psycopg.connect(env.service_dsn("topic"), autocommit=True) as conn:
            conn.execute("DELETE FROM topic.topics WHERE name < 'M'")
        run_backfill(env.settings(), "topic", "topics", chunk_rows=7)
        env.wait_caught_up(timeout=60, services=["topic"])
        with psycopg.connect(env.source) as src, psycopg.connect(env.service_dsn("topic")) as tgt:
            expected.assert_service_matches(src, tgt, "topic")
    finally:
        env.stop_all()

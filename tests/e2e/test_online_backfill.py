"""Online backfill of one table while the pipeline streams and the source takes writes (DBLog watermarks)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

from devtools.workload.driver import Workload
from splitter.core.progress import Progress
from splitter.ops.backfill import run_backfill
from tests import expected
from tests.conftest import KafkaServer
from tests.harness import prepare

SERVICES = ("auth", "user", "post", "topic", "comment", "notification", "interaction")


def _run_quietly(call: Callable[[], object]) -> None:
    try:
        call()
    except Exception as exc:  # the planned crash of the first run
        if type(exc).__name__ != "Crash":
            raise


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
        settings = env.settings()

        # A crash half way: stop after the second chunk, then resume from the last applied chunk.
        class Crash(Exception):
            pass

        def crash_after_two(progress: Progress) -> None:
            if progress.done >= 2 * 100:
                raise Crash

        # The operator starts the backfill; the application keeps writing meanwhile (updates of rows the
        # copy has not reached yet find no row in the wiped table: the copy brings them).
        first = threading.Thread(target=_run_quietly, args=(
            lambda: run_backfill(settings, "post", "posts", chunk_rows=100, progress=crash_after_two),))
        first.start()
        deadline = time.monotonic() + 60
        while True:
            with psycopg.connect(post_dsn, autocommit=True) as conn:
                if conn.execute("SELECT count(*) FROM splitter.backfills").fetchone() != (0,):
                    break
            assert time.monotonic() < deadline
            time.sleep(0.05)
        workload = Workload(env.source, seed=21, threads=2)
        stop = threading.Event()
        runner = threading.Thread(target=workload.run, args=(stop,))
        runner.start()
        first.join(120)
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
            missed = conn.execute("SELECT count(*) FROM splitter.backfill_missed").fetchone()
        assert done is not None and done[0] == "done"
        assert leftovers == (0,) and missed == (0,)
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


def test_table_added_to_the_topology_while_streaming_is_filled_without_a_restart(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], tmp_path: Path) -> None:
    full = (Path(__file__).resolve().parents[2] / "topology.py").read_text()
    start = full.index('                Table(\n                    "post_saves",')
    end = full.index('                Table(\n                    "follows",')
    topology = tmp_path / "topology.py"
    topology.write_text(full[:start] + full[end:])  # interaction without post_saves
    env = prepare(make_databases, kafka_server.bootstrap, unique_name, tmp_path, scale=100)
    env.topology = topology
    env.start_capture()
    worker = env.start_worker("interaction")
    try:
        env.wait_caught_up(timeout=120, services=["interaction"])
        with psycopg.connect(env.service_dsn("interaction"), autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM interaction.post_saves").fetchone() == (0,)
        workload = Workload(env.source, seed=4, threads=2)
        stop = threading.Event()
        runner = threading.Thread(target=workload.run, args=(stop,))
        runner.start()
        topology.write_text(full)  # the operator adds the table, then backfills it: no restart
        result = run_backfill(env.settings(), "interaction", "post_saves", chunk_rows=50)
        assert result.rows_copied > 0
        time.sleep(2)
        stop.set()
        runner.join(60)
        env.wait_caught_up(timeout=120, services=["interaction"])
        assert worker.poll() is None, "the worker kept running"
        with psycopg.connect(env.source) as src, psycopg.connect(env.service_dsn("interaction")) as tgt:
            expected.assert_service_matches(src, tgt, "interaction")
    finally:
        env.stop_all()


def test_a_toasted_row_moved_behind_the_copy_is_copied_again(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], tmp_path: Path) -> None:
    """An update that leaves the TOASTed content out and moves a row the copy has not reached to a key it
    has passed: the stream cannot rebuild that row (the wiped target has no copy to update), so the worker
    notes its key and the backfill copies it again before it calls the job done."""
    env = prepare(make_databases, kafka_server.bootstrap, unique_name, tmp_path, scale=100)
    env.start_capture()
    env.start_worker("post")
    try:
        with psycopg.connect(env.source, autocommit=True) as src:
            row = src.execute("SELECT max(id) FROM posts").fetchone()
            assert row is not None
            moved_from = row[0]
            # Incompressible, so it is stored out of line and later updates leave it out of the log.
            src.execute("UPDATE posts SET content = (SELECT string_agg(md5(g::text), '') FROM "
                        "generate_series(1, 400) AS g) WHERE id = %s", (moved_from,))
        env.wait_caught_up(timeout=120, services=["post"])
        post_dsn = env.service_dsn("post")
        with psycopg.connect(post_dsn, autocommit=True) as conn:
            conn.execute("DELETE FROM post.posts")
        moved_to = "00000000-0000-0000-0000-000000000001"  # before every key: the copy has passed it

        def move_after_first_chunk(progress: Progress) -> None:
            if progress.done == 10:
                with psycopg.connect(env.source, autocommit=True) as src:
                    src.execute("UPDATE posts SET id = %s, updated_at = now() WHERE id = %s", (moved_to, moved_from))

        result = run_backfill(env.settings(), "post", "posts", chunk_rows=10, progress=move_after_first_chunk)
        assert result.chunks > 2
        env.wait_caught_up(timeout=60, services=["post"])
        with psycopg.connect(post_dsn, autocommit=True) as conn:
            assert conn.execute("SELECT length(content) FROM post.posts WHERE id = %s", (moved_to,)).fetchone() \
                == (400 * 32,)
            assert conn.execute("SELECT count(*) FROM post.posts WHERE id = %s", (moved_from,)).fetchone() == (0,)
            status = conn.execute("SELECT status FROM splitter.backfills").fetchone()
            missed = conn.execute("SELECT count(*) FROM splitter.backfill_missed").fetchone()
        assert status == ("done",) and missed == (0,)
        with psycopg.connect(env.source) as src, psycopg.connect(post_dsn) as tgt:
            expected.assert_service_matches(src, tgt, "post")
    finally:
        env.stop_all()

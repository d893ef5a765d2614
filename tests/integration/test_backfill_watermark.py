"""The backfill's low watermark waits for the transactions open when it was written (real PostgreSQL).

A transaction whose commit record precedes the low watermark but which a snapshot taken just after it
cannot see yet would slip between the chunk and the window; the chunk read waits for such transactions.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg
import pytest

from connectors.pg.watermarks import wait_for_transactions_before as _wait_for_transactions_before
from splitter.core.errors import RetryableError


def test_the_chunk_read_waits_for_a_writer_open_at_the_low_watermark(
        make_databases: Callable[..., dict[str, str]]) -> None:
    dsn = make_databases(names=("bento_social",))["bento_social"]
    with psycopg.connect(dsn, autocommit=True) as setup:
        setup.execute("CREATE TABLE t (id int PRIMARY KEY)")
    with psycopg.connect(dsn) as writer, psycopg.connect(dsn, autocommit=True) as backfill:
        writer.execute("INSERT INTO t VALUES (1)")  # holds an xid until it commits
        xid = writer.execute("SELECT pg_current_xact_id()::text").fetchone()
        assert xid is not None
        opened = rf"transaction\(s\) xid {xid[0]} \(pid \d+\) on the source stayed open"
        with pytest.raises(RetryableError, match=opened):
            _wait_for_transactions_before(backfill, timeout=0.3)

        committed_at: list[float] = []

        def commit_later() -> None:
            time.sleep(0.5)
            committed_at.append(time.monotonic())
            writer.commit()

        committer = threading.Thread(target=commit_later)
        committer.start()
        _wait_for_transactions_before(backfill, timeout=10)
        returned_at = time.monotonic()
        committer.join()
        assert committed_at and returned_at >= committed_at[0], "it returned before the writer ended"
        assert backfill.execute("SELECT count(*) FROM t").fetchone() == (1,), "the chunk read now sees its row"


def test_no_open_writer_means_no_wait(make_databases: Callable[..., dict[str, str]]) -> None:
    dsn = make_databases(names=("bento_social",))["bento_social"]
    with psycopg.connect(dsn) as reader, psycopg.connect(dsn, autocommit=True) as backfill:
        reader.execute("SELECT 1")  # open, but it never took an xid: nothing to wait for
        _wait_for_transactions_before(backfill, timeout=0.5)


def test_a_chunk_settles_only_missed_keys_noted_before_its_high_watermark(
        make_databases: Callable[..., dict[str, str]]) -> None:
    from connectors.pg.state import backfills as backfill_store
    from connectors.pg.state.schema import ensure_state_schema

    dsn = make_databases(names=("post_db",))["post_db"]

    def missed(conn: psycopg.Connection) -> dict[str, str | None]:
        rows = conn.execute("SELECT key->>0, noted_lsn::text FROM splitter.backfill_missed").fetchall()
        return {r[0]: r[1] for r in rows}

    with psycopg.connect(dsn, autocommit=True) as conn:
        ensure_state_schema(conn)
        job = backfill_store.start_job(conn, "post", "public.posts", "{}", 10)
        with conn.transaction():  # a batch committed at 0/10
            backfill_store.note_missed(conn, job.id, [["a"], ["b"]])
            backfill_store.missed_noted_at(conn, "0/10")
        with conn.transaction():  # a batch committed at 0/30, after the chunk's watermark below
            backfill_store.note_missed(conn, job.id, [["d"]])
            backfill_store.missed_noted_at(conn, "0/30")
        with conn.transaction():  # the batch that applies the chunk (high watermark 0/20) and notes "c" too
            backfill_store.note_missed(conn, job.id, [["c"]])
            backfill_store.chunk_applied(conn, job.id, 1, 3, 0, ["d"], final=True,
                                         copied_keys=[["a"], ["c"], ["d"]], high_lsn="0/20")
            backfill_store.missed_noted_at(conn, "0/40")
        # "a": read by the chunk after the change that missed it.  "b": not in the chunk.  "c": noted in the
        # chunk's own batch, maybe after its watermark.  "d": noted after the watermark.
        assert missed(conn) == {"b": "0/10", "c": "0/40", "d": "0/30"}
        state = backfill_store.job(conn, job.id)
        assert state is not None and state.status == "running", "done only once no missed key is left"
        with conn.transaction():
            backfill_store.chunk_applied(conn, job.id, 2, 3, 0, None, final=True, repaired=[["b"], ["c"], ["d"]])
        assert missed(conn) == {}
        state = backfill_store.job(conn, job.id)
        assert state is not None and state.status == "done"

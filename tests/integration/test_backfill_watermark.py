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

from splitter.errors import RetryableError
from splitter.online_backfill import _wait_for_transactions_before


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

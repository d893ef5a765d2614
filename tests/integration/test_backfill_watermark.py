"""The backfill's low watermark waits for the transactions open when it was written (real PostgreSQL).

A transaction whose commit record precedes the low watermark but which a snapshot taken just after it
cannot see yet would slip between the chunk and the window; the chunk read waits for such transactions.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable

import psycopg
import pytest
from psycopg import sql

from connectors.pg.watermarks import wait_for_transactions_before as _wait_for_transactions_before
from splitter.core.errors import RetryableError
from tests import roles


def test_the_chunk_read_waits_for_a_writer_open_at_the_low_watermark(
        make_databases: Callable[..., dict[str, str]]) -> None:
    dsn = make_databases(names=("bento_social",))["bento_social"]
    with psycopg.connect(dsn, autocommit=True) as setup:
        setup.execute("CREATE TABLE t (id int PRIMARY KEY)")
        setup.execute(sql.SQL("GRANT SELECT ON t TO {}").format(sql.Identifier(roles.ROLE)))
    # The backfill runs as splitter's role; the writer is the application (another role).
    with psycopg.connect(dsn) as writer, psycopg.connect(roles.role_dsn(dsn), autocommit=True) as backfill:
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
    with psycopg.connect(dsn) as reader, psycopg.connect(roles.role_dsn(dsn), autocommit=True) as backfill:
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

    with psycopg.connect(dsn, autocommit=True) as admin:  # what the grants script does for the state schema
        admin.execute(sql.SQL("CREATE SCHEMA splitter AUTHORIZATION {}").format(sql.Identifier(roles.ROLE)))
    with psycopg.connect(roles.role_dsn(dsn), autocommit=True) as conn:
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


def test_a_chunk_range_finds_the_target_rows_the_source_lacks_through_a_mapped_key(
        make_databases: Callable[..., dict[str, str]]) -> None:
    """Source keys (a int, b text) land in target columns (aa bigint, bb text) in another order: the range is
    compared as the source orders keys (10 after 3, not before it as text would have it)."""
    from connectors.pg.backfill_deletes import KeyRange, absent_keys, range_problems
    from connectors.pg.source import relation_schema
    from splitter.topology.model import Route, Service, Table

    dsns = make_databases(names=("bento_social", "post_db"))
    with psycopg.connect(dsns["bento_social"], autocommit=True) as src:
        src.execute("CREATE TYPE mood AS ENUM ('sad', 'happy')")
        src.execute('CREATE TABLE s (a int, b text COLLATE "C", v text, PRIMARY KEY (a, b))')
        src.execute("CREATE TABLE e (m mood PRIMARY KEY)")
        relation = relation_schema(src, "public", "s")
        enum_relation = relation_schema(src, "public", "e")
        table = Table("t", source="s", key=("bb", "aa"), columns={"bb": "b", "aa": "a", "v": "v"})
        route = Route(Service("svc", database="post_db", schema="svc", tables=(table,)), table, "public", "s")
        computed = dataclasses.replace(table, columns={**table.columns, "aa": "a + 1"})
        computed_route = dataclasses.replace(route, table=computed)
        assert range_problems(src, [route], relation) == []
        problems = range_problems(src, [computed_route], relation)
        assert len(problems) == 1 and "key column 'aa' is computed ('a + 1')" in problems[0]
        enum_table = Table("e", source="e", key=("m",), columns={"m": "m"})
        enum_route = Route(Service("svc", database="post_db", tables=(enum_table,)), enum_table, "public", "e")
        problems = range_problems(src, [enum_route], enum_relation)
        assert len(problems) == 1 and "of type mood, which the source defines itself" in problems[0]
    with psycopg.connect(dsns["post_db"], autocommit=True) as tgt:
        tgt.execute("CREATE SCHEMA svc")
        tgt.execute("CREATE TABLE svc.t (bb text, aa bigint, v text, PRIMARY KEY (bb, aa))")
        tgt.execute("INSERT INTO svc.t VALUES ('x', 1, ''), ('a', 2, ''), ('b', 2, ''), ('z', 3, ''), ('k', 10, '')")

        def absent(after: tuple[str, str] | None, through: tuple[str, str] | None,
                   present: frozenset[tuple[str | None, ...]] | set[tuple[str | None, ...]] = frozenset(),
                   ) -> list[tuple[str | None, ...]]:
            with tgt.transaction():
                return absent_keys(tgt, [route], relation, KeyRange(after, through), present)

        assert absent(None, ("2", "a")) == [("1", "x"), ("2", "a")]
        assert absent(("2", "a"), ("3", "z"), {("2", "b"), ("5", "q")}) == [("3", "z")]
        assert absent(("3", "z"), None) == [("10", "k")]
        assert absent(None, None, {("1", "x"), ("2", "a"), ("2", "b"), ("3", "z")}) == [("10", "k")]

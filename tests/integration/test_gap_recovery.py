"""Recovering a service from a stretch of the change log it never applied, against real servers.

The recovery the worker's errors name (a lost offset, a transaction not whole in the log): `splitter replay
--from-offset N --accept-gap --yes`, restart the worker, `splitter backfill` each table, and `splitter verify`
finds nothing.  The lost stretch is made as an operator meets it: the worker is stopped while the source
takes inserts, updates and deletes, and the replay starts past them (the embedded broker cannot delete
records, so "gone from the log" is the stretch the replay skips).  The pipeline runs in threads (see
tests/integration/test_replay.py); the operator side goes through `splitter.cli.app`.  Expected rows come
from the tests' own SQL and tests/expected.py.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
import pytest

from connectors.pg.copy import ChunkReader
from splitter import cli
from splitter.core import envelope
from splitter.core.errors import ConfigurationError
from splitter.ops import backfill
from splitter.ops.backfill import run_backfill
from tests.conftest import KafkaServer
from tests.integration.test_dead_letters import wait_for
from tests.integration.test_replay import Pipeline, Stack, make_stack, pipelines, read_topic, requests_rows, run_cli

__all__ = ["pipelines"]  # the fixture, imported so pytest finds it here

NEW_POST = ("INSERT INTO posts (id, content, author_id, topic_id, created_at, updated_at) "
            "VALUES (%s, %s, 'a', 't', now(), now())")
# Incompressible, so it is stored out of line and an update that does not touch it leaves it out of the log.
TOASTED = "(SELECT string_agg(md5(g::text), '') FROM generate_series(1, 400) AS g)"


def ids(dsn: str, query: str) -> list[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return [r[0] for r in conn.execute(query).fetchall()]


def source_ids(stack: Stack) -> list[str]:
    return ids(stack.source, 'SELECT id FROM posts ORDER BY id COLLATE "C"')


def target_ids(stack: Stack) -> list[str]:
    return ids(stack.dsn("post"), 'SELECT id FROM post.posts ORDER BY id COLLATE "C"')


def first_offset_after(stack: Stack, lsn: int, commits: int) -> int:
    """The first log offset past source LSN `lsn`, once `commits` transactions after it are in the log."""
    found: list[int] = []

    def logged() -> bool:
        records = read_topic(stack.settings.kafka_bootstrap, stack.settings.topic, timeout=5)
        after = [(offset, headers) for offset, headers, _, _ in records
                 if int(headers.get(envelope.LSN_HEADER, b"0")) > lsn]
        if sum(h.get(envelope.KIND_HEADER) == envelope.KIND_COMMIT for _, h in after) < commits:
            return False
        found.append(after[0][0])
        return True

    wait_for("capture to log the changes after the lost stretch", logged)
    return found[0]


def test_replay_past_a_lost_stretch_then_backfill_leaves_no_difference(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], pipelines: list[Pipeline], capsys: pytest.CaptureFixture[str]) -> None:
    stack = make_stack(make_databases, kafka_server.bootstrap, unique_name, ["post"], scale=10)
    pipeline = Pipeline(stack.settings)
    pipelines.append(pipeline)
    pipeline.start_all()
    stack.wait_caught_up(pipeline=pipeline)
    pipeline.stop("post")

    # The stretch the service never applies: inserts (one with TOASTed content), an update, and deletes of
    # the first key, one in the middle and the last key (the chunks that reach the ends of the key space).
    before = source_ids(stack)
    doomed = [before[0], before[len(before) // 2], before[-1]]
    stack.source_exec(NEW_POST, params=("8-gap-1", "lost insert"))
    stack.source_exec(NEW_POST, params=("8-gap-2", "lost insert"))
    stack.source_exec(f"INSERT INTO posts (id, content, author_id, topic_id, created_at, updated_at) "
                      f"VALUES ('8-gap-toast', {TOASTED}, 'a', 't', now(), now())")
    stack.source_exec("UPDATE posts SET liked_count = 42 WHERE id = %s", params=(before[1],))
    stack.source_exec("DELETE FROM posts WHERE id = ANY(%s)", params=(doomed,))
    lost_until = stack.source_lsn()
    # After it, streamed: an update of the TOASTed row that leaves its content out (it finds no row until the
    # backfill copies one) and an insert.
    stack.source_exec("UPDATE posts SET liked_count = 5 WHERE id = '8-gap-toast'")
    stack.source_exec(NEW_POST, params=("8-after-1", "streamed"))
    from_offset = first_offset_after(stack, lost_until, commits=2)

    # The recovery, as the worker's error names it.  The replay is queued before the worker starts, so the
    # worker never applies the skipped stretch.
    args = stack.cli_args()
    post_db = stack.dsn("post")
    replay_code: list[int] = []
    replay = threading.Thread(target=lambda: replay_code.append(cli.main(
        ["replay", *args, "--service", "post", "--from-offset", str(from_offset), "--accept-gap", "--yes"])))
    replay.start()
    wait_for("the replay request", lambda: bool(requests_rows(post_db)))
    pipeline.start_worker("post")
    replay.join(90)
    out, err = capsys.readouterr()
    assert replay_code == [0], (out, err)
    assert "SKIPS offsets" in out and f"rewound to offset {from_offset}" in out, out
    stack.wait_caught_up(["post"], pipeline=pipeline)
    assert pipeline.running("post"), pipeline.errors["post"]

    have = set(target_ids(stack))
    stale = have - set(source_ids(stack))
    assert stale == set(doomed), "the deletes were in the lost stretch: the service still has those rows"
    assert {"8-gap-1", "8-gap-2", "8-gap-toast"}.isdisjoint(have) and "8-after-1" in have

    code, out, err = run_cli(capsys, "backfill", *args, "--service", "post", "--table", "posts", "--chunk-rows", "7")
    assert code == 0, (out, err)
    assert f", {len(stale)} deleted (gone from the source)," in out, out
    stack.wait_caught_up(["post"], pipeline=pipeline)

    assert set(target_ids(stack)).isdisjoint(doomed)
    stack.matches("post")
    with psycopg.connect(post_db, autocommit=True) as conn:
        jobs = conn.execute("SELECT status, chunk_rows, rows_deleted FROM splitter.backfills ORDER BY id").fetchall()
        toasted = conn.execute("SELECT length(content), liked_count FROM post.posts "
                               "WHERE id = '8-gap-toast'").fetchone()
    # One job: the one the replay opened (it noted the update that found no row), taken over by the backfill.
    assert jobs == [("done", 7, len(stale))], jobs
    assert toasted == (400 * 32, 5)
    code, out, err = run_cli(capsys, "verify", *args, "--service", "post")
    assert code == 0, (out, err)
    assert not pipeline.errors["post"], pipeline.errors["post"]


def test_a_stale_row_the_stream_writes_again_inside_the_window_is_left_to_the_stream(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], pipelines: list[Pipeline], monkeypatch: pytest.MonkeyPatch) -> None:
    """Watermark rule for deletes: the first chunk's read does not hold "0-reborn" (the source deleted it and
    the service never heard), but the source inserts and updates it again between that read and the chunk's
    high watermark.  The stream's row wins; "0-stale", untouched, goes; a row the source deletes inside the
    window goes by the stream."""
    stack = make_stack(make_databases, kafka_server.bootstrap, unique_name, ["post"], scale=10)
    pipeline = Pipeline(stack.settings)
    pipelines.append(pipeline)
    pipeline.start_all()
    stack.wait_caught_up(pipeline=pipeline)
    before = source_ids(stack)
    deleted_in_window = before[0]
    with psycopg.connect(stack.dsn("post"), autocommit=True) as conn:
        for stale in ("0-reborn", "0-stale"):  # both sort before every key: the first chunk's range
            conn.execute("INSERT INTO post.posts SELECT %s, author_id, topic_id, type, 'stale', image, is_featured, "
                         "comment_count, 99, created_at, updated_at FROM post.posts WHERE id = %s", (stale, before[1]))

    reads: list[list[dict[str, Any]]] = []
    read_chunk = ChunkReader.after

    def read_then_write(self: ChunkReader, conn: psycopg.Connection, last_key: Sequence[Any] | None) -> list[
            dict[str, Any]]:
        rows = read_chunk(self, conn, last_key)
        if not reads:
            reads.append(rows)
            stack.source_exec(NEW_POST, params=("0-reborn", "written again"))
            stack.source_exec("UPDATE posts SET liked_count = 11 WHERE id = '0-reborn'")
            stack.source_exec("DELETE FROM posts WHERE id = %s", params=(deleted_in_window,))
        return rows

    monkeypatch.setattr(ChunkReader, "after", read_then_write)
    result = run_backfill(stack.settings, "post", "posts", chunk_rows=5)
    stack.wait_caught_up(["post"], pipeline=pipeline)

    first = [r["id"] for r in reads[0]]
    assert "0-reborn" not in first and deleted_in_window in first
    with psycopg.connect(stack.dsn("post"), autocommit=True) as conn:
        reborn = conn.execute("SELECT content, liked_count FROM post.posts WHERE id = '0-reborn'").fetchone()
    assert reborn == ("written again", 11)
    have = set(target_ids(stack))
    assert "0-stale" not in have and deleted_in_window not in have
    assert result.rows_deleted == 1  # "0-stale"; the others were the stream's
    stack.matches("post")
    assert not pipeline.errors["post"], pipeline.errors["post"]


def test_a_key_that_cannot_be_compared_by_range_is_refused_before_any_watermark(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], monkeypatch: pytest.MonkeyPatch) -> None:
    stack = make_stack(make_databases, kafka_server.bootstrap, unique_name, ["post"], scale=2)
    topology = stack.settings.topology
    posts = topology.service("post").tables[0]
    computed = dataclasses.replace(posts, columns={**posts.columns, "id": "lower(id)"})
    service = dataclasses.replace(topology.service("post"), tables=(computed,))
    settings = stack.with_topology(dataclasses.replace(topology, services=(service,)))

    def no_watermark(*args: object, **kwargs: object) -> None:
        raise AssertionError("a watermark was written before the refusal")

    monkeypatch.setattr(backfill, "write_watermark", no_watermark)
    with pytest.raises(ConfigurationError) as info:
        run_backfill(settings, "post", "posts")
    message = str(info.value)
    assert "cannot remove the rows the source no longer has" in message
    assert "key column 'id' is computed ('lower(id)')" in message and "--no-delete" in message
    with psycopg.connect(stack.dsn("post"), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM splitter.backfills").fetchone() == (0,)

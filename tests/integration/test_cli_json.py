"""`--json` of backfill, cutover and rollback against real servers: one JSON object on stdout, progress on stderr.

The pipeline of one service (post) runs in threads (`tests.integration.test_replay`'s `Stack` and
`Pipeline`); the operator's side goes through `splitter.cli.app` as typed.  Every value checked in the
JSON is compared with what the test's own SQL reads from the databases.  pytest's captured stderr is no
terminal, so the progress there is the plain periodic lines a CI log or cron gets.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from splitter.core import exit_codes
from splitter.ops.cutover.report import STEPS
from splitter.pipeline.reverse import ReverseDaemon
from tests.conftest import KafkaServer
from tests.integration.test_replay import Pipeline, Stack, make_stack, pipelines, run_cli

__all__ = ["pipelines"]  # the fixture, imported so pytest finds it here


def one_object(out: str) -> dict[str, Any]:
    """stdout holds exactly one JSON object (one line), nothing else."""
    lines = out.splitlines()
    assert len(lines) == 1, f"stdout is not one JSON line: {out!r}"
    data = json.loads(lines[0])
    assert isinstance(data, dict)
    return data


def query(dsn: str, statement: str, *params: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(statement.encode(), params).fetchall()


def started(stack: Stack, pipelines: list[Pipeline], reverse: bool = False) -> Pipeline:
    pipeline = Pipeline(stack.settings)
    pipelines.append(pipeline)
    pipeline.start_all()
    if reverse:
        pipeline._start("reverse", lambda ev: ReverseDaemon(stack.settings, ["post"]).run(ev))
    stack.wait_caught_up(pipeline=pipeline)
    return pipeline


def cutover_state(stack: Stack) -> dict[str, str]:
    """post's cutover state and home, by the test's own SQL (no row yet: streaming from the source)."""
    state = query(stack.source, "SELECT state FROM splitter.cutover WHERE service = 'post'")
    home = query(stack.source, "SELECT home FROM splitter.routing WHERE service = 'post'")
    return {"state": state[0][0] if state else "streaming", "home": home[0][0] if home else "source"}


def test_backfill_json_on_stdout_and_progress_lines_on_stderr(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], pipelines: list[Pipeline], capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    stack = make_stack(make_databases, kafka_server.bootstrap, unique_name, ["post"])
    with caplog.at_level(logging.INFO, logger="splitter.pipeline.initial_copy"):
        pipeline = started(stack, pipelines)
    # Capture's initial copy logged its progress: post's one table, all its rows, and that it is done.
    (posts,) = query(stack.source, "SELECT count(*) FROM posts")[0]
    copied = [r.getMessage() for r in caplog.records if r.getMessage().startswith("initial copy post: ")]
    assert len(copied) == 1 and copied[0].startswith(f"initial copy post: {posts:,}/~"), copied
    assert "done in" in copied[0] and "[public.posts → post.post.posts, 1/1 tables]" in copied[0]
    with psycopg.connect(stack.dsn("post"), autocommit=True) as conn:
        # Half the rows lost, and one the source never had (sorts first: the first chunk's key range).
        conn.execute("DELETE FROM post.posts WHERE id IN (SELECT id FROM post.posts ORDER BY id COLLATE \"C\" "
                     "LIMIT (SELECT count(*) / 2 FROM post.posts))")
        conn.execute("INSERT INTO post.posts SELECT '0-stale', author_id, topic_id, type, 'stale', image, "
                     "is_featured, comment_count, liked_count, created_at, updated_at FROM post.posts LIMIT 1")
    (source_rows,) = query(stack.source, "SELECT count(*) FROM posts")[0]
    code, out, err = run_cli(capsys, "backfill", "--service", "post", "--table", "posts", "--chunk-rows", "10",
                             "--json", *stack.cli_args())
    assert code == exit_codes.OK, err
    result = one_object(out)
    (job_id, status, copied, deleted, chunks) = query(
        stack.dsn("post"), "SELECT id, status, rows_copied + rows_skipped, rows_deleted, chunks_done "
                           "FROM splitter.backfills")[0]
    assert status == "done"
    assert result["command"] == "backfill" and result["service"] == "post"
    assert (result["job_id"], result["chunks"]) == (job_id, chunks)
    assert result["rows_copied"] + result["rows_skipped"] == copied == source_rows  # every source row, once
    assert result["rows_deleted"] == deleted == 1 and result["deletes"] is True  # '0-stale'
    assert result["table"] == "post.posts" and result["source_table"] == "public.posts"
    assert result["resumed"] is False and result["seconds"] > 0
    stack.wait_caught_up(["post"], pipeline=pipeline)
    stack.matches("post")
    # Progress: plain lines (no terminal), the first at once and the last when done; none on stdout.
    lines = [x for x in err.splitlines() if x.startswith("backfill: ")]
    assert len(lines) >= 2, err
    assert lines[0].startswith("backfill: 0") and "[post.posts, 0 chunks]" in lines[0]
    assert f"backfill: {source_rows:,}" in lines[-1] and "done in" in lines[-1] and f"{chunks} chunks" in lines[-1]


def test_cutover_dry_run_and_refusal_as_json(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], pipelines: list[Pipeline], capsys: pytest.CaptureFixture[str]) -> None:
    stack = make_stack(make_databases, kafka_server.bootstrap, unique_name, ["post"], scale=10)
    started(stack, pipelines)
    code, out, err = run_cli(capsys, "cutover", "--service", "post", "--dry-run", "--json", "--max-lag", "10s",
                             *stack.cli_args())
    assert code == exit_codes.OK, err
    plan = one_object(out)
    assert (plan["command"], plan["result"], plan["dry_run"], plan["exit_code"]) == ("cutover", "planned", True, 0)
    (post_db,) = query(stack.dsn("post"), "SELECT current_database()")[0]
    (source_db,) = query(stack.source, "SELECT current_database()")[0]
    [member] = plan["plan"]["services"]
    assert member["service"] == "post" and member["database"] == stack.settings.topology.service("post").database
    assert 0 <= member["lag_seconds"] <= 10
    assert plan["plan"]["source_database"] == stack.settings.topology.source_database
    assert [f["table"] for f in plan["plan"]["fences"]] == ["public.posts"]
    assert "cutover of service post" in plan["plan_text"]
    assert [s["step"] for s in plan["steps"]] == ["preflight"]
    assert plan["states"] == {"post": cutover_state(stack)} == {"post": {"state": "streaming", "home": "source"}}
    # Nothing changed: no fence trigger on the source table, no reverse slot in the service database.
    assert query(stack.source, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.posts'::regclass "
                 "AND NOT tgisinternal") == [(0,)]
    assert query(stack.dsn("post"), "SELECT count(*) FROM pg_replication_slots WHERE database = %s",
                 post_db) == [(0,)]
    assert source_db != post_db
    assert "cutover: " in err  # the step as progress, on stderr

    code, out, err = run_cli(capsys, "rollback", "--service", "post", "--yes", "--json", *stack.cli_args())
    assert code == exit_codes.REFUSED, err
    refused = one_object(out)
    assert (refused["command"], refused["result"], refused["exit_code"]) == ("rollback", "refused", 4)
    assert "nothing to roll back" in refused["error"] and refused["plan"] is None
    assert "nothing to roll back" in err  # the one-line message on stderr, as without --json


def test_cutover_and_rollback_results_as_json(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], pipelines: list[Pipeline], capsys: pytest.CaptureFixture[str]) -> None:
    stack = make_stack(make_databases, kafka_server.bootstrap, unique_name, ["post"], scale=10)
    started(stack, pipelines, reverse=True)
    code, out, err = run_cli(capsys, "cutover", "--service", "post", "--yes", "--json", "--max-lag", "10s",
                             "--timeout", "60s", *stack.cli_args())
    assert code == exit_codes.OK, err
    done = one_object(out)
    assert (done["command"], done["result"], done["dry_run"], done["error"]) == ("cutover", "done", False, None)
    assert [s["step"] for s in done["steps"]] == list(STEPS["cutover"])
    assert all(s["seconds"] >= 0 for s in done["steps"])
    assert done["states"] == {"post": cutover_state(stack)} == \
        {"post": {"state": "reverse_streaming", "home": "service"}}
    assert done["plan"]["services"][0]["reverse_slot"] in [
        r[0] for r in query(stack.dsn("post"), "SELECT slot_name FROM pg_replication_slots")]
    assert any("switched" in m for m in done["messages"])
    assert "cutover of service post" in done["plan_text"] and "cutover of service post" in err  # asked on stderr

    code, out, err = run_cli(capsys, "rollback", "--service", "post", "--yes", "--json", "--max-lag", "10s",
                             "--timeout", "60s", *stack.cli_args())
    assert code == exit_codes.OK, err
    back = one_object(out)
    assert (back["command"], back["result"]) == ("rollback", "done")
    assert [s["step"] for s in back["steps"]] == list(STEPS["rollback"])
    assert back["states"] == {"post": cutover_state(stack)} == {"post": {"state": "rolled_back", "home": "source"}}
    assert back["plan"]["services"][0]["reverse_lag_seconds"] >= 0

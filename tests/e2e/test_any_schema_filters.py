"""Row filters (`Table(..., where=...)`) through the initial copy, the stream, verify, backfill and, after the
rows' owner (unfiltered: a filtered route can only be a read copy) cut over, the reverse stream.

An update that moves a row into a route's filter becomes an insert in that service, one that moves it out a
delete, as PostgreSQL's row filters do; one table is split between two services by a predicate.  Updates
that leave a large (TOASTed) value unchanged: judged by the filter when it reads only changed columns; on a
REPLICA IDENTITY FULL table capture sends them whole, so a row they move in is written whole; elsewhere a
row they move in cannot be written, and the worker stops, naming the fix (plan warns of it first).
The expected rows are the test's own SQL: the filters written out by hand.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import psycopg

from splitter.ops.plan import ERROR, WARNING, build_plan
from tests.anyschema import setup
from tests.conftest import KafkaServer

DATABASES = ("all_db", "live_db", "even_db", "odd_db", "marked_db", "pages_db")
#: (database, table, what it must hold: a query on the source written by hand)
EXPECTED = (
    ("all_db", "posts", "SELECT id, status, author, body FROM posts"),
    ("all_db", "docs", "SELECT id, published, body FROM docs"),
    ("live_db", "posts", "SELECT id, status, author, body FROM posts WHERE status NOT LIKE 'del%'"),
    ("even_db", "posts", "SELECT id, status, author, body FROM posts WHERE author % 2 = 0"),
    ("odd_db", "posts", "SELECT id, status, author, body FROM posts WHERE author % 2 = 1"),
    ("marked_db", "posts", "SELECT id, status, author, body FROM posts WHERE body LIKE '%x%'"),
    ("pages_db", "docs", "SELECT id, published, body FROM docs WHERE published"),
)
#: A value PostgreSQL stores out of line (TOASTed) and, unchanged, leaves out of an update.
BIG = "(SELECT string_agg(md5(g::text || {seed}), '') FROM generate_series(1, 400) g)"


def _rows(dsn: str, query: str) -> set[tuple[str | None, ...]]:
    with psycopg.connect(dsn, options=setup.READ_OPTIONS) as conn:
        return {tuple(None if v is None else str(v) for v in r) for r in conn.execute(query).fetchall()}


def _assert_filtered(dsns: dict[str, str]) -> None:
    for database, table, query in EXPECTED:
        columns = query.split("SELECT ")[1].split(" FROM")[0]
        expected = _rows(dsns[setup.SOURCE], query)
        actual = _rows(dsns[database], f"SELECT {columns} FROM {table}")
        assert actual == expected, f"{database}.{table}: missing {expected - actual}, extra {actual - expected}"


def _wait_for(env: setup.PipelineEnv, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in env.logs():
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{env.logs()}"
        time.sleep(0.5)


def test_row_filters_through_copy_stream_verify_and_backfill(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], tmp_path: Path) -> None:
    env = setup.prepare(make_databases, kafka_server.bootstrap, unique_name, tmp_path,
                        schema="filters.sql", target_schema="filters_target.sql",
                        topology=setup.HERE / "filters_topology.py", databases=DATABASES)
    setup.execute(env.source, [
        "INSERT INTO posts VALUES (1, 'draft', 1, 'a'), (2, 'deleted', 2, 'b'), (3, NULL, 3, 'c'),"
        " (4, 'published', 4, 'd')",
        f"INSERT INTO posts VALUES (5, 'draft', 5, {BIG.format(seed=5)}), (6, 'draft', 6, {BIG.format(seed=6)})",
        f"INSERT INTO docs VALUES (1, true, 'short'), (2, false, {BIG.format(seed=2)}),"
        f" (3, false, {BIG.format(seed=3)})",
    ])

    plan = build_plan(env.settings())
    assert [f for f in plan.findings if f.severity == ERROR] == []
    full_identity = {f.service for f in plan.findings if f.code == "filter-needs-full-identity"}
    assert full_identity == {"live", "even", "odd", "marked"}  # docs has REPLICA IDENTITY FULL: no warning for pages
    assert all(f.severity == WARNING for f in plan.findings if f.code == "filter-needs-full-identity")

    env.start("run", "run")
    try:
        env.wait_caught_up(timeout=120)
        _assert_filtered(env.dsns)
        setup.execute(env.source, [
            "INSERT INTO posts VALUES (10, 'draft', 10, 'x'), (11, 'deleted', 11, 'y')",
            "UPDATE posts SET status = 'deleted' WHERE id = 1",  # out of live
            "UPDATE posts SET status = 'draft' WHERE id IN (2, 3)",  # into live
            "UPDATE posts SET author = 7 WHERE id = 4",  # from even to odd
            "UPDATE posts SET id = 40, status = 'moved' WHERE id = 10",  # a new key, kept
            "DELETE FROM posts WHERE id = 11",  # never was in live
            # The body is unchanged (TOASTed, not sent), and live's filter reads only sent columns; marked's
            # reads only the body, so these rows, never in marked, stay out of it.
            "UPDATE posts SET status = 'deleted' WHERE id = 5",  # out of live
            "UPDATE posts SET status = 'published' WHERE id = 6",  # stays in live and in even
            # REPLICA IDENTITY FULL: capture sends the unchanged body from the old row.
            "UPDATE docs SET published = true WHERE id = 2",  # into pages, whole
            "UPDATE docs SET published = false WHERE id = 1",  # out of pages
        ])
        env.wait_caught_up(timeout=120)
        _assert_filtered(env.dsns)
        for service in ("all", "live", "even", "odd", "marked", "pages"):
            assert env.command("verify", "--service", service) == 0, env.logs()

        setup.repaired_by_backfill(env, "live", "posts", [  # a kept row lost, a dropped row let in
            "DELETE FROM posts WHERE id = 2", "INSERT INTO posts VALUES (1, 'deleted', 1, 'a')",
        ], lambda: _assert_filtered(env.dsns))

        # Into odd's filter with the body unchanged and not sent: odd cannot write the row and stops, saying why;
        # even, which the row leaves, deletes it.
        setup.execute(env.source, ["UPDATE posts SET author = 9 WHERE id = 6"])
        _wait_for(env, "moved rows into the route's row filter ('author % 2 = 1')")
        assert "REPLICA IDENTITY FULL on public.posts" in env.logs()
        env.wait_caught_up(timeout=60, services=["all", "live", "even", "marked", "pages"])
        assert _rows(env.dsns["even_db"], "SELECT id FROM posts WHERE id = 6") == set()

        # Cut over `all`, the rows' owner: its own writes flow back into the source through the reverse stream,
        # and from there into the filtered read copies that keep them, and out of those they leave.
        assert env.command("cutover", "--service", "all", "--yes", "--max-lag", "10s", "--timeout", "60s") == 0, \
            env.logs()
        setup.execute(env.dsns["all_db"], ["INSERT INTO posts VALUES (50, 'draft', 50, 'written in all')",
                                           "UPDATE posts SET body = 'edited in all' WHERE id = 2",
                                           "UPDATE posts SET status = 'deleted' WHERE id = 3"])
        expected = {("2", "edited in all"), ("3", "deleted"), ("50", "written in all")}
        deadline = time.monotonic() + 60
        while _rows(env.source, "SELECT id, coalesce(body, status) FROM posts WHERE id IN (2, 50) "
                                "UNION ALL SELECT id, status FROM posts WHERE id = 3") != expected:
            assert time.monotonic() < deadline, env.logs()
            time.sleep(0.5)
        env.wait_caught_up(timeout=60, services=["live", "even"])
        assert _rows(env.dsns["even_db"], "SELECT id, body FROM posts WHERE id IN (2, 50)") == {
            ("2", "edited in all"), ("50", "written in all")}
        assert _rows(env.dsns["live_db"], "SELECT id FROM posts WHERE id IN (2, 3, 50)") == {("2",), ("50",)}
    finally:
        env.stop_all()

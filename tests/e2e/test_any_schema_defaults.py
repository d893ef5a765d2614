"""`DEFAULT` in a topology expression: the service's own default where the source has NULL.

Through the initial copy, the stream (inserts, updates to and from NULL), verify and backfill, and in
`splitter plan`: a nullable column mapped plainly over a defaulted one is warned about, a DEFAULT whose
target default is no constant (now()) is refused before anything moves, by plan and by every process.
The expected rows are the test's own SQL, with the target's defaults written out by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from connectors.pg.catalog import target_columns
from splitter.core.errors import ConfigurationError
from splitter.ops.plan import ERROR, WARNING, build_plan
from tests.anyschema import setup
from tests.conftest import KafkaServer

COLUMNS = ["status", "score", "tags", "note", "plain"]
#: What the service must hold, computed in the source: the defaults of defaults_target.sql, by hand.
EXPECTED = """SELECT id::text AS id, coalesce(status, 'fresh') AS status, coalesce(score, -1) AS score,
                     coalesce(tags, '{}') AS tags, note, note AS plain FROM accounts"""


def _rows(dsn: str, query: str) -> dict[str, tuple[str | None, ...]]:
    with psycopg.connect(dsn, options=setup.READ_OPTIONS) as conn:
        rows = conn.execute(f"SELECT id, {', '.join(f'{c}::text' for c in COLUMNS)} FROM ({query}) AS q").fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


def _assert_defaults_applied(env_dsns: dict[str, str]) -> None:
    expected = _rows(env_dsns[setup.SOURCE], EXPECTED)
    actual = _rows(env_dsns["accounts_db"], "SELECT id::text AS id, status, score, tags, note, plain FROM accounts")
    assert actual == expected


def test_default_in_expressions_through_copy_stream_verify_and_backfill(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], tmp_path: Path) -> None:
    env = setup.prepare(make_databases, kafka_server.bootstrap, unique_name, tmp_path,
                        schema="defaults.sql", target_schema="defaults_target.sql",
                        topology=setup.HERE / "defaults_topology.py", databases=("accounts_db",))
    setup.execute(env.source, [
        "INSERT INTO accounts VALUES (1, NULL, NULL, NULL, NULL, NULL), (2, 'active', 7, '{a,b}', 'x', now())"])

    plan = build_plan(env.settings())
    assert [f for f in plan.findings if f.severity == ERROR] == []
    warned = [f for f in plan.findings if f.code == "null-over-default"]
    assert [(f.table, f.column) for f in warned] == [("public.accounts", "note")]
    assert "'n/a'" in warned[0].message and "coalesce(..., DEFAULT)" in warned[0].message

    env.start("run", "run")
    try:
        env.wait_caught_up(timeout=120)
        _assert_defaults_applied(env.dsns)
        with psycopg.connect(env.dsns["accounts_db"]) as conn:  # what the hand-written expectation relies on
            assert conn.execute("SELECT status::text, score, tags::text FROM accounts WHERE id = 1").fetchone() == (
                "fresh", -1, "{}")
        setup.execute(env.source, [
            "INSERT INTO accounts VALUES (3, NULL, 5, NULL, NULL, NULL), (4, 'closed', NULL, '{}', 'y', NULL)",
            "UPDATE accounts SET status = NULL, score = NULL, tags = NULL, note = NULL WHERE id = 2",
            "UPDATE accounts SET status = 'active', score = 3 WHERE id = 1",
            "DELETE FROM accounts WHERE id = 4",
        ])
        env.wait_caught_up(timeout=120)
        _assert_defaults_applied(env.dsns)
        assert env.command("verify", "--service", "accounts") == 0, env.logs()

        setup.repaired_by_backfill(env, "accounts", "accounts", [
            "UPDATE accounts SET status = 'closed', score = 99 WHERE id = 2", "DELETE FROM accounts WHERE id = 3",
        ], lambda: _assert_defaults_applied(env.dsns))
    finally:
        env.stop_all()


def test_default_that_is_no_constant_is_refused_before_data_moves(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], tmp_path: Path) -> None:
    topology = tmp_path / "topology.py"
    topology.write_text((setup.HERE / "defaults_topology.py").read_text().replace(
        '"plain": "coalesce(note, DEFAULT)",',
        '"plain": "coalesce(note, DEFAULT)", "created": "coalesce(created, DEFAULT)",'))
    env = setup.prepare(make_databases, kafka_server.bootstrap, unique_name, tmp_path,
                        schema="defaults.sql", target_schema="defaults_target.sql",
                        topology=topology, databases=("accounts_db",))
    settings = env.settings()
    refused = [f for f in build_plan(settings).findings if f.code == "default-not-constant"]
    assert [(f.severity, f.column) for f in refused] == [(ERROR, "created")]
    assert "now()" in refused[0].message and "not a constant" in refused[0].message
    assert not [f for f in build_plan(settings).findings if f.severity == WARNING and f.column == "created"]

    route = next(settings.topology.routes())
    with psycopg.connect(env.dsns["accounts_db"]) as conn, pytest.raises(ConfigurationError) as raised:
        target_columns(conn, route)  # what the copy, the worker, verify and backfill all start with
    assert "accounts.created" in str(raised.value) and "now()" in str(raised.value)
    setup.execute(env.source, ["INSERT INTO accounts VALUES (1, NULL, NULL, NULL, NULL, NULL)"])
    assert env.command("capture", timeout=120) == 2  # a configuration error: exit 2, stays down under `run`
    assert "accounts.created" in env.logs() and "now()" in env.logs()
    with psycopg.connect(env.dsns["accounts_db"]) as conn:
        assert conn.execute("SELECT count(*) FROM accounts").fetchone() == (0,)

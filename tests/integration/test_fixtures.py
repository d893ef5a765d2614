"""The test fixtures themselves, against a real PostgreSQL: DDL, generated data, workload, expectations.

Everything else in the suite leans on these: if the source DDL, the target DDL, the data generator, the
workload or the hand-written expectations were wrong, every end-to-end test would be wrong with them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from devtools import datagen, fixtures
from devtools.workload.driver import Workload
from devtools.workload.mix import OP_KINDS
from splitter.topology.loading import load_topology
from splitter.topology.model import Topology
from tests import expected as ex

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load_topology(REPO / "topology.py")


@pytest.fixture
def dbs(make_databases: Callable[..., dict[str, str]]) -> dict[str, str]:
    """Fresh bento_social + seven service databases, schemas loaded, no rows."""
    out = make_databases()
    with psycopg.connect(out["bento_social"]) as conn:
        fixtures.load_source_schema(conn)
    for database in fixtures.TARGET_DATABASES:
        with psycopg.connect(out[database]) as conn:
            fixtures.load_target_schema(conn, database)
    return out


@pytest.fixture
def source_dsn(make_databases: Callable[..., dict[str, str]]) -> str:
    """A fresh bento_social alone (schema loaded, no rows), for tests that need no service database."""
    dsn = make_databases(names=("bento_social",))["bento_social"]
    with psycopg.connect(dsn) as conn:
        fixtures.load_source_schema(conn)
    return dsn


@pytest.fixture
def source(source_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        yield conn


def _one(conn: psycopg.Connection[Any], query: str, *params: Any) -> Any:
    row = conn.execute(query.encode(), params or None).fetchone()
    assert row is not None
    return row[0]


def _table_digest(conn: psycopg.Connection[Any], table: str) -> str:
    return str(
        _one(
            conn,
            sql.SQL("SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {} AS t")
            .format(sql.Identifier(table))
            .as_string(conn),
        )
    )


# ---------------------------------------------------------------------------------------------- DDL


def test_target_ddl_matches_topology(dbs: dict[str, str], topology: Topology) -> None:
    """Every declared target table exists with a unique index exactly on its key, and every column
    the topology declares exists; columns it leaves out have a default (the database fills them)."""
    for service in topology.services:
        with psycopg.connect(dbs[service.database]) as conn:
            for table in service.tables:
                schema, name = service.target(table)
                rows = conn.execute(
                    "SELECT a.attname, a.attnotnull, a.atthasdef FROM pg_attribute a"
                    " JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped",
                    (schema, name),
                ).fetchall()
                assert rows, f"{service.database}: {schema}.{name} does not exist"
                columns = {r[0]: (r[1], r[2]) for r in rows}
                assert set(table.columns) <= set(columns), (service.name, name)
                for column, (not_null, has_default) in columns.items():
                    if column not in table.columns:
                        assert has_default or not not_null, f"{schema}.{name}.{column} cannot be filled"
                unique_keys = {
                    tuple(r[0])
                    for r in conn.execute(
                        "SELECT array_agg(a.attname ORDER BY k.ord) FROM pg_index i"
                        " JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
                        " CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)"
                        " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum"
                        " WHERE n.nspname = %s AND c.relname = %s AND i.indisunique AND i.indpred IS NULL"
                        " GROUP BY i.indexrelid",
                        (schema, name),
                    ).fetchall()
                }
                assert tuple(table.key) in unique_keys, (service.name, name, unique_keys)


def test_source_ddl_is_the_monolith(source: psycopg.Connection[Any], topology: Topology) -> None:
    tables = {r[0] for r in source.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert tables == set(datagen.SOURCE_TABLES)
    assert _one(source, "SELECT count(*) FROM pg_constraint WHERE contype = 'f'") == 0
    # comment_likes is taken by no service, and not listed as unrouted: `splitter plan` must report it.
    routed = {t for _, t in topology.source_tables()}
    assert tables - routed == {"comment_likes"}
    assert "comment_likes" not in topology.unrouted
    # The source never enforced unique usernames (user_db does).
    assert not _one(
        source,
        "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid"
        " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey)"
        " WHERE c.relname = 'users' AND a.attname = 'username' AND i.indisunique",
    )


def test_unknown_target_database_is_a_configuration_error() -> None:
    from splitter.core.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="no shipped schema"):
        fixtures.target_schema_sql("billing_db")


# ----------------------------------------------------------------------------------------- datagen


def test_datagen_counts_invariants_and_realism(source: psycopg.Connection[Any]) -> None:
    counts = datagen.generate(source, scale=300, seed=11)
    assert counts["users"] == 300
    assert counts["topics"] == 20
    assert counts["posts"] == 900
    assert counts["comments"] == 1500
    assert counts["notifications"] == 1500
    assert 1200 <= counts["followers"] <= 1500
    assert 2500 <= counts["post_likes"] + counts["comment_likes"] <= 3000
    assert ex.source_invariant_violations(source) == 0
    # Unique usernames, although only user_db enforces it.
    assert _one(source, "SELECT count(DISTINCT username) FROM users") == 300
    # Other counters agree with their rows too.
    for query in (
        "SELECT count(*) FROM users u WHERE coalesce(post_count, 0)"
        " <> (SELECT count(*) FROM posts p WHERE p.author_id = u.id)",
        "SELECT count(*) FROM posts p WHERE coalesce(liked_count, 0)"
        " <> (SELECT count(*) FROM post_likes l WHERE l.post_id = p.id)",
        "SELECT count(*) FROM posts p WHERE coalesce(comment_count, 0)"
        " <> (SELECT count(*) FROM comments c WHERE c.post_id = p.id)",
        "SELECT count(*) FROM comments c WHERE reply_count"
        " <> (SELECT count(*) FROM comments r WHERE r.parent_id = c.id)",
        "SELECT count(*) FROM topics t WHERE post_count <> (SELECT count(*) FROM posts p WHERE p.topic_id = t.id)",
    ):
        assert _one(source, query) == 0, query
    # Realism: NULLs, empty strings, unicode, TOASTed values, milliseconds, NULL-able counters.
    assert _one(source, "SELECT count(*) FROM users WHERE bio IS NULL") > 0
    assert _one(source, "SELECT count(*) FROM users WHERE bio = ''") > 0
    assert _one(source, "SELECT count(*) FROM users WHERE status IS NULL") > 0
    assert _one(source, "SELECT count(*) FROM users WHERE follower_count IS NULL") > 0
    assert _one(source, "SELECT count(*) FROM users WHERE octet_length(bio) > length(bio)") > 0
    assert _one(source, "SELECT count(*) FROM posts WHERE type IS NULL") > 0
    assert _one(source, "SELECT count(*) FROM comments WHERE content = ''") > 0
    assert _one(source, "SELECT count(*) FROM users WHERE role = 'admin'") > 0
    assert _one(source, "SELECT count(*) FROM notifications WHERE content IS NULL") > 0
    assert _one(source, "SELECT count(*) FROM notifications WHERE actor_id IS NULL") > 0
    assert _one(source, "SELECT count(*) FROM comments WHERE updated_at IS NULL") > 0
    assert _one(source, "SELECT count(*) FROM posts WHERE pg_column_size(content) > 4000") > 0
    assert _one(source, "SELECT pg_relation_size(reltoastrelid) FROM pg_class WHERE relname = 'posts'") > 0, (
        "long posts must be stored out of line (TOASTed)"
    )
    assert _one(source, "SELECT count(*) FROM followers WHERE created_at <> date_trunc('second', created_at)") > 0, (
        "timestamp(3) columns must carry milliseconds, or narrowing them tests nothing"
    )


def test_datagen_is_deterministic(make_databases: Callable[..., dict[str, str]]) -> None:
    dbs = make_databases(names=("a", "b", "c"))
    digests: dict[str, list[str]] = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        with psycopg.connect(dbs[name], autocommit=True) as conn:
            fixtures.load_source_schema(conn)
            datagen.generate(conn, scale=60, seed=seed)
            digests[name] = [_table_digest(conn, t) for t in datagen.SOURCE_TABLES]
    assert digests["a"] == digests["b"]
    assert digests["a"] != digests["c"]


# ---------------------------------------------------------------------------------------- workload


def test_workload_runs_every_operation_and_keeps_invariants(source_dsn: str, source: psycopg.Connection[Any]) -> None:
    datagen.generate(source, scale=150, seed=3)
    workload = Workload(source_dsn, seed=9, threads=3)
    counts = workload.run_for(4.0)
    assert set(counts) == set(OP_KINDS), f"never committed: {set(OP_KINDS) - set(counts)}"
    assert ex.source_invariant_violations(source) == 0
    assert _one(source, "SELECT count(*) - count(DISTINCT username) FROM users") == 0
    # Rows the workload wrote carry the awkward values too.
    assert _one(source, "SELECT count(*) FROM posts WHERE octet_length(content) > 4000") > 0
    assert _one(source, "SELECT count(*) FROM users WHERE length(username) > 0 AND username LIKE '%\\_%'") > 0

    workload.truncate_once("followers")
    assert _one(source, "SELECT count(*) FROM followers") == 0
    assert ex.source_invariant_violations(source) == 0
    more = Workload(source_dsn, seed=10, threads=2, rate=200).run_for(1.0)
    assert more.get("follow", 0) > 0
    assert ex.source_invariant_violations(source) == 0
    with pytest.raises(ValueError, match="not a bento_social table"):
        workload.truncate_once("pg_class")


def test_workload_perform_single_operation(source_dsn: str, source: psycopg.Connection[Any]) -> None:
    datagen.generate(source, scale=20, seed=1)
    workload = Workload(source_dsn, seed=1, threads=1)
    post_count = _one(source, "SELECT count(*) FROM posts")
    assert workload.perform("create_post")
    assert _one(source, "SELECT count(*) FROM posts") == post_count + 1
    old_ids = {r[0] for r in source.execute("SELECT id FROM posts")}
    assert workload.perform("change_post_id")
    new_ids = {r[0] for r in source.execute("SELECT id FROM posts")}
    assert len(new_ids - old_ids) == 1 and len(old_ids - new_ids) == 1
    with pytest.raises(ValueError, match="unknown operation"):
        workload.perform("drop_database")


# ------------------------------------------------------------------------------------ expectations


def _copy_expected_into_targets(source: psycopg.Connection[Any], dbs: dict[str, str]) -> None:
    """Play the part of a perfect splitter: expected rows, copied into the service databases by hand."""
    for (service, table), spec in ex.SPECS.items():
        rows = ex.expected_rows(source, service, table)
        with psycopg.connect(dbs[ex.SERVICE_DATABASES[service]]) as target, target.cursor() as cur:
            statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
                sql.Identifier(*spec.target), sql.SQL(", ").join(sql.Identifier(c) for c in spec.columns)
            )
            with cur.copy(statement) as copy:
                for row in rows:
                    copy.write_row(row)


def test_expected_and_actual_agree_on_hand_copied_tables(dbs: dict[str, str]) -> None:
    with psycopg.connect(dbs["bento_social"], autocommit=True) as source:
        _expected_and_actual_agree(dbs, source)


def _expected_and_actual_agree(dbs: dict[str, str], source: psycopg.Connection[Any]) -> None:
    datagen.generate(source, scale=120, seed=21)
    Workload(dbs["bento_social"], seed=4, threads=2).run_for(1.5)
    _copy_expected_into_targets(source, dbs)
    for service, database in ex.SERVICE_DATABASES.items():
        with psycopg.connect(dbs[database]) as target:
            ex.assert_service_matches(source, target, service)
            for table in ex.tables_of(service):
                assert ex.actual_rows(target, service, table), f"{service}.{table} is empty"
    with psycopg.connect(dbs["user_db"]) as user_db:
        assert ex.user_db_invariant_violations(user_db) == 0
        # Narrowed timestamps really are whole seconds in the target.
        assert (
            _one(user_db, "SELECT count(*) FROM users.followers WHERE created_at <> date_trunc('second', created_at)")
            == 0
        )

    # A wrong row is reported readably: which table, which row, '-' missing / '+' unexpected.
    with psycopg.connect(dbs["post_db"], autocommit=True) as post_db:
        victim = _one(post_db, "SELECT id FROM post.posts ORDER BY id LIMIT 1")
        post_db.execute("UPDATE post.posts SET liked_count = liked_count + 1000 WHERE id = %s", (victim,))
        with pytest.raises(AssertionError) as caught:
            ex.assert_service_matches(source, post_db, "post")
        message = str(caught.value)
        assert "post.post.posts" in message and victim in message
        assert re.search(r"^\s+- \(id=", message, re.M) and re.search(r"^\s+\+ \(id=", message, re.M)
    with psycopg.connect(dbs["user_db"], autocommit=True) as user_db:
        user_db.execute(
            "UPDATE users.users SET follower_count = follower_count + 1 WHERE id IN"
            " (SELECT id FROM users.users ORDER BY id LIMIT 3)"
        )
        assert ex.user_db_invariant_violations(user_db) == 3


def test_topology_expressions_agree_with_hand_written_expectations(
    source: psycopg.Connection[Any], topology: Topology
) -> None:
    """topology.py and tests/expected.py state the same projection twice, independently; they must agree.

    The topology's expressions are run here in the simplest possible way (one SELECT over the source
    table, each expression cast to text), not through splitter's renderer.
    """
    datagen.generate(source, scale=80, seed=8)
    for route in topology.routes():
        spec = ex.spec(route.service.name, route.table.name.split(".")[-1])
        assert set(spec.columns) - set(route.table.columns) <= {"mfa_enabled"}, route.describe()
        assert set(route.table.columns) <= set(spec.columns), route.describe()
        selected = []
        for column in spec.columns:
            expr = route.table.columns.get(column)
            # A target-only column the topology leaves to the database default (auth.users.mfa_enabled).
            selected.append(sql.SQL("({})::text").format(sql.SQL(expr)) if expr else sql.SQL("'false'"))
        query = sql.SQL("SELECT {} FROM {}").format(
            sql.SQL(", ").join(selected), sql.Identifier(route.source_schema, route.source_table)
        )
        got = {tuple(r) for r in source.execute(query).fetchall()}
        want = ex.expected_rows(source, route.service.name, route.table.name)
        assert got == want, "\n".join([route.describe(), *ex.diff(want, got, spec.columns)])

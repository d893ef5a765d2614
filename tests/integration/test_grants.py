"""splitter's own role: what the tests hand splitter is not a superuser, and the grants are enough and exact.

The grants are what `splitter grants` prints (the shipped deploy/postgres/splitter-role.sql for topology.py,
tests/unit/test_grants_script.py), run by `tests.roles` as the superuser.  Here: the DSNs the harness gives
splitter log in as that role, with no superuser, CREATEDB, CREATEROLE, BYPASSRLS, CREATE on any database
or membership in any other role; `splitter plan` as the role finds no privilege problem after the grants
and names the one a revoked grant leaves; a publication the role cannot extend is a ConfigurationError that
names the statement its owner must run, while one that has every table is used as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from connectors.pg import fence
from connectors.pg.fence import FenceSpec
from connectors.pg.origins import origin_name, setup_origin
from connectors.pg.source import ensure_publication
from devtools import fixtures
from devtools.embedded.postgres import EmbeddedPostgres
from splitter.core.errors import ConfigurationError
from splitter.ops.plan import ERROR, build_plan
from splitter.pipeline.config import Settings
from splitter.topology.loading import load_topology
from tests import roles
from tests.conftest import PG15_BIN, KafkaServer
from tests.harness import prepare

ROOT = Path(__file__).resolve().parents[2]
#: Every plan finding about the role's rights (splitter/ops/plan/rules.py).
PRIVILEGE_CODES = {"no-replication-role", "no-select", "no-create-publication", "publication-not-owned",
                   "not-owner", "no-create-schema", "no-state-schema-privilege", "no-temp",
                   "no-session-replication-role", "no-replication-origin", "missing-privilege"}
ROLE_FACTS = ("SELECT current_user, r.rolsuper, r.rolreplication, r.rolcreatedb, r.rolcreaterole, r.rolbypassrls, "
              "has_database_privilege(current_database(), 'CREATE'), "
              "(SELECT count(*) FROM pg_auth_members m WHERE m.member = r.oid) "
              "FROM pg_roles r WHERE r.rolname = current_user")


def test_the_pipeline_runs_as_a_role_that_is_not_a_superuser(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str], tmp_path: Path) -> None:
    env = prepare(make_databases, kafka_server.bootstrap, unique_name, tmp_path, scale=5)
    settings = env.settings()
    children = env.env()
    handed = [settings.source_dsn, *settings.target_dsns.values(),
              *(v for k, v in children.items() if k == "SPLITTER_SOURCE_DSN" or k.startswith("SPLITTER_TARGET_DSN_"))]
    assert len(handed) == 2 * (1 + len(settings.target_dsns))
    for dsn in handed:
        with psycopg.connect(dsn, autocommit=True) as conn:
            facts = conn.execute(ROLE_FACTS).fetchone()
        # login, superuser, replication, createdb, createrole, bypassrls, CREATE here, member of any role
        assert facts == (roles.ROLE, False, True, False, False, False, False, 0), dsn


def _databases(make_databases: Callable[..., dict[str, str]]) -> dict[str, str]:
    dsns = make_databases()
    with psycopg.connect(dsns["bento_social"], autocommit=True) as conn:
        fixtures.load_source_schema(conn)
    for database in fixtures.TARGET_DATABASES:
        with psycopg.connect(dsns[database], autocommit=True) as conn:
            fixtures.load_target_schema(conn, database)
    return dsns


def test_plan_as_the_role_finds_no_privilege_problem_and_names_a_revoked_grant(
        make_databases: Callable[..., dict[str, str]], kafka_server: KafkaServer,
        unique_name: Callable[[str], str]) -> None:
    dsns = _databases(make_databases)
    topology = load_topology(ROOT / "topology.py")
    settings = roles.as_role(Settings(
        topology=topology, source_dsn=dsns["bento_social"], kafka_bootstrap=kafka_server.bootstrap,
        target_dsns={s.name: dsns[s.database] for s in topology.services}, topic=unique_name("t"),
        slot=unique_name("slot")[:63], publication=unique_name("pub")[:63]))

    plan = build_plan(settings)
    assert [f for f in plan.findings if f.severity == ERROR] == []
    assert [f for f in plan.findings if f.code in PRIVILEGE_CODES] == []
    assert not [f for f in plan.findings if f.code in ("publication-created", "publication-extended")]

    role = sql.Identifier(roles.ROLE)
    with psycopg.connect(dsns["auth_db"], autocommit=True) as conn:
        conn.execute(sql.SQL("REVOKE INSERT ON auth.users FROM {}").format(role))
    with psycopg.connect(dsns["post_db"], autocommit=True) as conn:
        conn.execute(sql.SQL("REVOKE EXECUTE ON FUNCTION pg_replication_origin_session_setup(text) FROM {}")
                     .format(role))
    refused = [(f.severity, f.code, f.service, f.table) for f in build_plan(settings).findings
               if f.code in PRIVILEGE_CODES]
    assert sorted(refused) == [("ERROR", "missing-privilege", "auth", "auth.users"),
                               ("WARNING", "no-replication-origin", "post", None)]


def test_a_publication_the_role_cannot_extend_names_the_statement_for_its_owner(
        make_databases: Callable[..., dict[str, str]]) -> None:
    dsns = make_databases(names=("bento_social", "post_db"))
    with psycopg.connect(dsns["bento_social"], autocommit=True) as conn:
        fixtures.load_source_schema(conn)
    with psycopg.connect(dsns["post_db"], autocommit=True) as conn:
        fixtures.load_target_schema(conn, "post_db")
    topology = load_topology(ROOT / "topology.py").subset(["post"])
    settings = roles.as_role(Settings(topology=topology, source_dsn=dsns["bento_social"], kafka_bootstrap="127.0.0.1:9",
                                      target_dsns={"post": dsns["post_db"]}, topic="unused", publication="pub_posts"))
    published = ("SELECT array_agg(tablename::text ORDER BY tablename) FROM pg_publication_tables "
                 "WHERE pubname = 'pub_posts'")

    with psycopg.connect(settings.source_dsn, autocommit=True) as conn:
        ensure_publication(conn, "pub_posts", topology.source_tables())  # complete: used as it is
        with pytest.raises(ConfigurationError) as refused:
            ensure_publication(conn, "pub_posts", [*topology.source_tables(), ("public", "topics")])
        with pytest.raises(ConfigurationError) as not_created:
            ensure_publication(conn, "pub_other", [("public", "topics")])
    message = str(refused.value)
    assert 'ALTER PUBLICATION "pub_posts" ADD TABLE "public"."topics"' in message, message
    assert f"role {roles.ROLE} " in message and "42501" in message
    assert 'CREATE PUBLICATION "pub_other" FOR TABLE "public"."topics"' in str(not_created.value)
    with psycopg.connect(dsns["bento_social"], autocommit=True) as conn:
        assert conn.execute(published).fetchone() == (["posts"],)
        assert conn.execute("SELECT count(*) FROM pg_publication WHERE pubname = 'pub_other'").fetchone() == (0,)





@pytest.mark.skipif(not (PG15_BIN / "postgres").exists(), reason="Debian postgresql-15 not installed")
def test_the_same_grants_suffice_on_postgresql_15(pg_factory: Callable[..., EmbeddedPostgres],
                                                  kafka_server: KafkaServer, unique_name: Callable[[str], str]) -> None:
    """GRANT SET ON PARAMETER exists since 15: plan as the role is clean, and the role applies as a replica
    with an origin, fences and sweeps its fence."""
    server = pg_factory(bin_dir=PG15_BIN)
    assert server.major_version == 15
    topology = load_topology(ROOT / "topology.py").subset(["user"])
    with psycopg.connect(server.dsn(), autocommit=True) as admin:
        for database in ("bento_social", "user_db"):
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    with psycopg.connect(server.dsn("bento_social"), autocommit=True) as conn:
        fixtures.load_source_schema(conn)
    with psycopg.connect(server.dsn("user_db"), autocommit=True) as conn:
        fixtures.load_target_schema(conn, "user_db")
    roles.create_role(server.dsn())
    settings = roles.as_role(Settings(
        topology=topology, source_dsn=server.dsn("bento_social"), kafka_bootstrap=kafka_server.bootstrap,
        target_dsns={"user": server.dsn("user_db")}, topic=unique_name("t"), publication="splitter"))

    assert [f for f in build_plan(settings).findings if f.code in PRIVILEGE_CODES or f.severity == ERROR] == []
    with psycopg.connect(settings.target_dsn("user"), autocommit=True) as conn:
        assert setup_origin(conn, origin_name("user")).usable
        conn.execute("SET session_replication_role = replica")
    spec = FenceSpec("public", "users", "users moved", "user", ("bio",), rows=False)
    with psycopg.connect(settings.source_dsn, autocommit=True) as conn:
        with conn.transaction():
            fence.fence_tables(conn, [spec], "user", fence.HARD, "hint")
        with conn.transaction():
            fence.unfence_tables(conn, [("public", "users")], "user")
        assert fence.sweep(conn, [("public", "users")], "user")
        assert conn.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.users'::regclass "
                            "AND NOT tgisinternal").fetchone() == (0,)

"""The cutover preflight refuses roles that cannot mark their writes with a replication origin.

After a cutover the forward worker applies into the service database and the reverse worker into the
source; a reverse capture skips writes made under a replication origin (`origin 'none'`) and a forward worker
skips its own reverse stream's (the origin on the record).  A worker
whose role cannot use origins applies unmarked writes, which the other direction sends back: the two
streams echo each other and an older echoed value can overwrite a newer write.  So `splitter cutover`
refuses (exit REFUSED, nothing changed) until both roles may, and names the role, the database and the
GRANT.

Real PostgreSQL, no broker and no running pipeline: the forward worker's checkpoint is written by the test
far ahead of the source, standing in for a worker that has caught up, so the preflight's lag check passes
and the origin check is the only thing that can refuse.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from connectors.pg.sink import ServiceSink
from connectors.pg.state.schema import Checkpoint, ensure_state_schema, write_checkpoint
from devtools import fixtures
from splitter import cli
from splitter.core.exit_codes import OK, REFUSED
from splitter.core.lsn import str_to_lsn
from splitter.topology.loading import load_topology
from tests.conftest import PgServer

ROOT = Path(__file__).resolve().parents[2]
SERVICE = "post"  # owns one table, public.posts → post.posts, shared with no other service
ORIGIN_FUNCTIONS = ("pg_replication_origin_create(text)", "pg_replication_origin_session_setup(text)")
GRANT = f"GRANT EXECUTE ON FUNCTION {', '.join(ORIGIN_FUNCTIONS)}"


@dataclass
class Env:
    role: str
    dsns: dict[str, str]  # as the test's admin (a superuser)
    role_dsns: dict[str, str]  # as `role`
    names: dict[str, str]  # logical → real database name

    def exec(self, database: str, *statements: sql.Composed | str) -> None:
        with psycopg.connect(self.dsns[database], autocommit=True) as conn:
            for stmt in statements:
                conn.execute(stmt if isinstance(stmt, sql.Composed) else stmt.encode())

    def query(self, database: str, statement: str, *params: object) -> list[tuple[object, ...]]:
        with psycopg.connect(self.dsns[database], autocommit=True) as conn:
            return conn.execute(statement.encode(), params).fetchall()

    def cutover(self, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
        code = cli.main(["cutover", "--service", SERVICE, "--topology", str(ROOT / "topology.py"),
                         "--source-dsn", self.role_dsns["bento_social"], "--kafka", "127.0.0.1:9",
                         "--target-dsn", f"{SERVICE}={self.role_dsns['post_db']}",
                         "--slot", "origins_slot", "--publication", "origins_pub", "--max-lag", "5s", *extra])
        out, err = capsys.readouterr()
        return code, out, err

    def grant_origins(self, database: str) -> None:
        ident = sql.Identifier(self.role)
        self.exec(database, sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(
            sql.SQL(", ").join(sql.SQL(f) for f in ORIGIN_FUNCTIONS), ident))

    def snapshot(self) -> dict[str, list[tuple[object, ...]]]:
        """What a started cutover changes: fence triggers, cutover state and routing, the reverse stream."""
        return {
            "source triggers": self.query("bento_social", "SELECT tgname FROM pg_trigger "
                                          "WHERE tgrelid = 'public.posts'::regclass AND NOT tgisinternal"),
            "service triggers": self.query("post_db", "SELECT tgname FROM pg_trigger "
                                           "WHERE tgrelid = 'post.posts'::regclass AND NOT tgisinternal"),
            "cutover": self.query("bento_social", "SELECT service, state, attempt, history::text "
                                  "FROM splitter.cutover ORDER BY service"),
            "routing": self.query("bento_social", "SELECT service, home FROM splitter.routing ORDER BY service"),
            "checkpoints": self.query("bento_social", "SELECT service FROM splitter.checkpoints ORDER BY service")
            if self.query("bento_social", "SELECT to_regclass('splitter.checkpoints')")[0][0] else [],
            "slots": self.query("post_db", "SELECT slot_name FROM pg_replication_slots WHERE database = %s",
                                self.names["post_db"]),
            "publications": self.query("post_db", "SELECT pubname FROM pg_publication"),
        }


@pytest.fixture
def env(make_databases: Callable[..., dict[str, str]], pg_server: PgServer) -> Iterator[Env]:
    dsns = make_databases("origins", names=("bento_social", "post_db"))
    with psycopg.connect(dsns["bento_social"]) as conn:
        fixtures.load_source_schema(conn)
    with psycopg.connect(dsns["post_db"]) as conn:
        fixtures.load_target_schema(conn, "post_db")
    role = f"origins_{uuid.uuid4().hex[:8]}"
    password = "pw-" + uuid.uuid4().hex[:8]
    names = {k: str(conninfo_to_dict(v)["dbname"]) for k, v in dsns.items()}
    e = Env(role, dsns, {k: make_conninfo(v, user=role, password=password) for k, v in dsns.items()}, names)
    ident = sql.Identifier(role)
    # Everything else the cutover needs of the role (docs/cutover.md "Requirements"): slots and publications
    # in the service database, the state schema in both, its tables for the fence, session_replication_role.
    e.exec("bento_social", sql.SQL("CREATE ROLE {} LOGIN REPLICATION PASSWORD {}").format(ident, sql.Literal(password)))
    try:
        for database in ("bento_social", "post_db"):
            e.exec(database, sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
                sql.Identifier(names[database]), ident))
        e.exec("bento_social", sql.SQL("ALTER TABLE public.posts OWNER TO {}").format(ident),
               sql.SQL("GRANT SET ON PARAMETER session_replication_role TO {}").format(ident))
        e.exec("post_db", sql.SQL("GRANT USAGE ON SCHEMA post TO {}").format(ident),
               sql.SQL("ALTER TABLE post.posts OWNER TO {}").format(ident))
        # The precondition, from the catalog: not a superuser, and no EXECUTE on the origin functions.
        for database in ("bento_social", "post_db"):
            rows = e.query(database, "SELECT r.rolsuper, has_function_privilege(r.rolname, %s, 'EXECUTE') "
                           "OR has_function_privilege(r.rolname, %s, 'EXECUTE') FROM pg_roles r "
                           "WHERE r.rolname = %s", *ORIGIN_FUNCTIONS, role)
            assert rows == [(False, False)]
        # A forward worker that has caught up: its checkpoint (in its own state schema) far ahead of the source.
        with psycopg.connect(e.role_dsns["post_db"], autocommit=True) as conn:
            ensure_state_schema(conn)
            write_checkpoint(conn, SERVICE, Checkpoint("origins", 0, 0, str_to_lsn("FFFF/0"), None))
        yield e
    finally:
        for database in ("bento_social", "post_db"):
            e.exec(database, sql.SQL("DROP OWNED BY {}").format(ident))
        e.exec("bento_social", sql.SQL("DROP ROLE {}").format(ident))


def test_cutover_refused_until_both_roles_may_use_origins(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    service_db, source_db = env.names["post_db"], env.names["bento_social"]

    code, _, err = env.cutover(capsys, "--dry-run")
    assert code == REFUSED, err
    for database in (service_db, source_db):  # the forward worker's database and the reverse worker's
        assert f"role {env.role} cannot use replication origins in database {database}" in err
    assert f"{GRANT} TO {env.role}" in err
    before = env.snapshot()
    assert before["cutover"] == [] and before["source triggers"] == [] and before["slots"] == []

    code, out, err = env.cutover(capsys, "--yes", "--timeout", "5s")
    assert code == REFUSED, out + err
    assert f"role {env.role} cannot use replication origins in database {service_db}" in err
    assert env.snapshot() == before  # refused before anything was changed

    env.grant_origins("post_db")
    code, _, err = env.cutover(capsys, "--dry-run")
    assert code == REFUSED, err
    assert f"database {service_db}" not in err
    assert f"role {env.role} cannot use replication origins in database {source_db}" in err

    # The positive control: with EXECUTE in both databases the preflight passes and prints the plan.
    env.grant_origins("bento_social")
    code, out, err = env.cutover(capsys, "--dry-run")
    assert code == OK, out + err
    assert f"cutover of service {SERVICE}" in out and "cannot use replication origins" not in out + err
    assert env.snapshot() == before


def test_sink_without_origin_privilege_warns_and_applies(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    """Outside a cutover the plain forward stream keeps going unmarked: the sink only warns."""
    topology = load_topology(str(ROOT / "topology.py"))
    routes = topology.routes_for(topology.service(SERVICE))
    with caplog.at_level(logging.WARNING, logger="connectors.pg.sink"):
        ServiceSink(env.role_dsns["post_db"], SERVICE, routes, topic="origins").close()
    warned = [r.getMessage() for r in caplog.records if "its writes are not marked" in r.getMessage()]
    assert len(warned) == 1 and f"{GRANT} TO {env.role}" in warned[0], caplog.text
    assert f"database {env.names['post_db']}" in warned[0]

    caplog.clear()
    env.grant_origins("post_db")
    with caplog.at_level(logging.WARNING, logger="connectors.pg.sink"):
        ServiceSink(env.role_dsns["post_db"], SERVICE, routes, topic="origins").close()
    assert "not marked" not in caplog.text

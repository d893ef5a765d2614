"""Per-service fences on shared tables, against real PostgreSQL (no broker, no pipeline).

`users` feeds auth (its rows and login columns) and user (the profile columns).  Each service's fence is
its own trigger with its own column list, so a write is refused exactly when it touches what a fenced
service owns, and lifting one service's fence leaves the other's.  A soft fence holds only while some
session holds the advisory lock of its `lock_service`; the read-copy fence in a service database stops
ordinary sessions and not the forward worker's (session_replication_role = replica).  Expected refusals
and row contents come from the test's own SQL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from connectors.pg import fence
from connectors.pg.fence import FenceSpec
from devtools import fixtures
from splitter.pipeline.config import Settings
from splitter.topology.loading import load_topology
from tests import roles

ROOT = Path(__file__).resolve().parents[2]
AUTH_COLUMNS = ("id", "username", "password", "salt", "role", "status", "created_at")
PROFILE_COLUMNS = ("first_name", "last_name", "cover", "avatar", "bio", "website_url", "follower_count",
                   "post_count", "updated_at")
AUTH = FenceSpec("public", "users", "users.password, users.salt moved to service auth (auth_db); write there",
                 "auth", AUTH_COLUMNS, rows=True)
USER = FenceSpec("public", "users", "users.bio moved to service user (user_db); write there", "user",
                 PROFILE_COLUMNS, rows=False)
USERS = [("public", "users")]
HINT = "read splitter.routing"
INSERT = ("INSERT INTO users (id, username, first_name, last_name, password, salt) "
          "VALUES ('u2', 'bob', 'Bob', 'B', 'pw', 's')")


@dataclass
class Dbs:
    source: str
    user_db: str

    def run(self, dsn: str, statement: str, replica: bool = False) -> psycopg.Error | None:
        """Run `statement` in its own autocommit session; the error it failed with, or None."""
        with psycopg.connect(dsn, autocommit=True) as conn:
            if replica:
                conn.execute("SET session_replication_role = replica")
            try:
                conn.execute(statement.encode())
            except psycopg.Error as exc:
                return exc
        return None

    @staticmethod
    def splitter(dsn: str) -> str:
        """`dsn` as splitter's role: fences are set, lifted and read by splitter, never as a superuser."""
        return roles.role_dsn(dsn)

    def kill(self, conn: psycopg.Connection) -> None:
        """End `conn`'s backend like a crash, and wait until it is gone (its locks with it)."""
        with psycopg.connect(self.source, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s, 10000)", (conn.info.backend_pid,))
        conn.close()

    def one(self, dsn: str, query: str) -> object:
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute(query.encode()).fetchone()
        assert row is not None
        return row[0]


@pytest.fixture
def dbs(make_databases: Callable[..., dict[str, str]]) -> Iterator[Dbs]:
    dsns = make_databases(names=("bento_social", "user_db"))
    with psycopg.connect(dsns["bento_social"], autocommit=True) as conn:
        fixtures.load_source_schema(conn)
        conn.execute("INSERT INTO users (id, username, first_name, last_name, password, salt) "
                     "VALUES ('u1', 'ann', 'Ann', 'A', 'old', 's1')")
    with psycopg.connect(dsns["user_db"], autocommit=True) as conn:
        fixtures.load_target_schema(conn, "user_db")
        conn.execute("INSERT INTO users.users (id, username, first_name, last_name, created_at, updated_at) "
                     "VALUES ('u1', 'ann', 'Ann', 'A', now(), now())")
    topology = load_topology(str(ROOT / "topology.py")).subset(["user"])
    roles.grant(Settings(topology=topology, source_dsn=dsns["bento_social"], kafka_bootstrap="127.0.0.1:9",
                         target_dsns={"user": dsns["user_db"]}, topic="unused"))
    yield Dbs(dsns["bento_social"], dsns["user_db"])


def fence_now(dsn: str, specs: list[FenceSpec], lock_service: str, mode: str) -> None:
    with psycopg.connect(roles.role_dsn(dsn), autocommit=True) as conn, conn.transaction():
        fence.fence_tables(conn, specs, lock_service, mode, HINT)


def refused(err: psycopg.Error | None, database: str) -> None:
    assert err is not None, "the write went through"
    assert err.sqlstate == fence.FENCE_SQLSTATE, err
    assert err.diag.message_primary is not None and database in err.diag.message_primary
    assert err.diag.message_hint == HINT


def test_partial_fence_refuses_owned_columns_and_rows_only(dbs: Dbs) -> None:
    fence_now(dbs.source, [AUTH], "auth", fence.HARD)

    assert dbs.run(dbs.source, "UPDATE users SET bio = 'hello' WHERE id = 'u1'") is None
    refused(dbs.run(dbs.source, "UPDATE users SET password = 'new' WHERE id = 'u1'"), "auth_db")
    refused(dbs.run(dbs.source, "UPDATE users SET bio = 'x', salt = 'y' WHERE id = 'u1'"), "auth_db")
    refused(dbs.run(dbs.source, INSERT), "auth_db")
    refused(dbs.run(dbs.source, "DELETE FROM users WHERE id = 'u1'"), "auth_db")
    refused(dbs.run(dbs.source, "TRUNCATE users CASCADE"), "auth_db")
    assert dbs.one(dbs.source, "SELECT bio || '/' || password || '/' || count(*) OVER () FROM users") \
        == "hello/old/1"


def test_two_services_fence_one_table_at_once(dbs: Dbs) -> None:
    fence_now(dbs.source, [AUTH], "auth", fence.HARD)
    fence_now(dbs.source, [USER], "user", fence.SOFT)
    holder = psycopg.connect(dbs.splitter(dbs.source), autocommit=True)
    try:
        assert fence.try_lock(holder, "user")
        refused(dbs.run(dbs.source, "UPDATE users SET bio = 'hello' WHERE id = 'u1'"), "user_db")
        refused(dbs.run(dbs.source, "UPDATE users SET password = 'new' WHERE id = 'u1'"), "auth_db")
        with psycopg.connect(dbs.splitter(dbs.source), autocommit=True) as conn:
            found = {f.service: f for f in fence.fences(conn, USERS)}
            assert set(found) == {"auth", "user"}
            assert (found["auth"].mode, found["auth"].columns, found["auth"].rows) == \
                (fence.HARD, AUTH_COLUMNS, True)
            assert (found["user"].mode, found["user"].columns, found["user"].rows, found["user"].lock_held) == \
                (fence.SOFT, PROFILE_COLUMNS, False, True)
            assert [f.service for f in fence.fences(conn, USERS, "user")] == ["user"]
    finally:
        dbs.kill(holder)
    # user's soft fence let go with its lock holder; auth's hard one stays.
    assert dbs.run(dbs.source, "UPDATE users SET bio = 'hello' WHERE id = 'u1'") is None
    refused(dbs.run(dbs.source, "UPDATE users SET password = 'new' WHERE id = 'u1'"), "auth_db")


def test_soft_fence_holds_while_its_lock_service_is_held(dbs: Dbs) -> None:
    """A group cutover fences auth's and user's columns under the lead's (auth's) one lock."""
    fence_now(dbs.source, [AUTH, USER], "auth", fence.SOFT)
    lead = psycopg.connect(dbs.splitter(dbs.source), autocommit=True)
    other = psycopg.connect(dbs.splitter(dbs.source), autocommit=True)
    try:
        assert fence.try_lock(lead, "auth")
        assert fence.try_lock(other, "user")  # not the lock these fences check
        refused(dbs.run(dbs.source, "UPDATE users SET bio = 'hello' WHERE id = 'u1'"), "user_db")
        refused(dbs.run(dbs.source, INSERT), "auth_db")
        dbs.kill(lead)
        assert dbs.run(dbs.source, "UPDATE users SET bio = 'hello', password = 'new' WHERE id = 'u1'") is None
        assert dbs.run(dbs.source, INSERT) is None
    finally:
        lead.close()
        other.close()
    assert dbs.one(dbs.source, "SELECT count(*) FROM users WHERE password IN ('new', 'pw')") == 2


def test_read_copy_fence_stops_ordinary_sessions_not_replica(dbs: Dbs) -> None:
    """user_db.users after user's switch: auth's columns and rows are a read copy the forward stream feeds."""
    spec = FenceSpec("users", "users", "users.username in user_db is a read copy owned by service auth",
                     "user", ("id", "username", "status", "created_at"), rows=True)
    with psycopg.connect(dbs.splitter(dbs.user_db), autocommit=True) as conn, conn.transaction():
        fence.read_copy_tables(conn, [spec], HINT)
    insert = ("INSERT INTO users.users (id, username, first_name, last_name, created_at, updated_at) "
              "VALUES ('u2', 'bob', 'Bob', 'B', now(), now())")

    assert dbs.run(dbs.user_db, "UPDATE users.users SET bio = 'mine' WHERE id = 'u1'") is None
    refused(dbs.run(dbs.user_db, "UPDATE users.users SET username = 'eve' WHERE id = 'u1'"), "user_db")
    refused(dbs.run(dbs.user_db, insert), "user_db")
    refused(dbs.run(dbs.user_db, "DELETE FROM users.users"), "user_db")
    # The forward worker applies as replica: ordinary triggers do not fire for it.
    assert dbs.run(dbs.user_db, "UPDATE users.users SET username = 'eve' WHERE id = 'u1'", replica=True) is None
    assert dbs.run(dbs.user_db, insert, replica=True) is None
    assert dbs.one(dbs.user_db, "SELECT string_agg(username, ',' ORDER BY id) FROM users.users") == "eve,bob"
    with psycopg.connect(dbs.splitter(dbs.user_db), autocommit=True) as conn:
        [found] = fence.fences(conn, [("users", "users")], "user", fence.READ_COPY)
        assert (found.kind, found.mode, found.columns, found.rows) == \
            (fence.READ_COPY, fence.HARD, spec.columns, True)
        assert fence.fences(conn, [("users", "users")], "user") == []  # not a (source/service) fence
        with conn.transaction():
            fence.lift_read_copy(conn, [("users", "users")], "user")
    assert dbs.run(dbs.user_db, "DELETE FROM users.users WHERE id = 'u2'") is None


def _triggers(conn: psycopg.Connection) -> list[tuple[str]]:
    return conn.execute("SELECT tgname FROM pg_trigger WHERE tgrelid = 'public.users'::regclass "
                        "AND NOT tgisinternal ORDER BY tgname").fetchall()


def test_unfence_and_sweep_of_one_service_leave_the_other(dbs: Dbs) -> None:
    """Sweeping as the tables' owner (DROP TRIGGER needs it) drops auth's lifted trigger only."""
    fence_now(dbs.source, [AUTH], "auth", fence.HARD)
    fence_now(dbs.source, [USER], "user", fence.HARD)
    with psycopg.connect(dbs.source, autocommit=True) as conn:
        with conn.transaction():
            fence.unfence_tables(conn, USERS, "auth")
        assert dbs.run(dbs.source, "UPDATE users SET password = 'new' WHERE id = 'u1'") is None
        assert fence.sweep(conn, USERS, "auth")
        assert _triggers(conn) == [(fence.trigger_name("user"),)]
        assert [(f.service, f.mode) for f in fence.fences(conn, USERS)] == [("user", fence.HARD)]
    refused(dbs.run(dbs.source, "UPDATE users SET bio = 'hello' WHERE id = 'u1'"), "user_db")
    assert dbs.run(dbs.source, INSERT) is None  # user does not own the rows


def test_splitters_role_sweeps_through_the_scripts_function_and_nothing_but_fences(dbs: Dbs) -> None:
    """The role has TRIGGER on users, not its ownership (DROP TRIGGER needs that): it drops its lifted fence
    through the grants script's function, which refuses any trigger that is not splitter's fence."""
    fence_now(dbs.source, [AUTH], "auth", fence.HARD)
    with psycopg.connect(dbs.source, autocommit=True) as admin:
        admin.execute("CREATE FUNCTION public.app_audit() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NULL; "
                      "END$$")
        admin.execute("CREATE TRIGGER app_audit AFTER UPDATE ON users FOR EACH STATEMENT EXECUTE FUNCTION app_audit()")
    with psycopg.connect(dbs.splitter(dbs.source), autocommit=True) as conn:
        with conn.transaction():
            fence.unfence_tables(conn, USERS, "auth")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DROP TRIGGER app_audit ON users")
        assert fence.sweep(conn, USERS, "auth")
        assert _triggers(conn) == [("app_audit",)]
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="is not a splitter fence"):
            conn.execute("SELECT splitter.drop_fence_trigger('public.users', 'app_audit')")
    assert dbs.one(dbs.source, "SELECT count(*) FROM pg_trigger WHERE tgname = 'app_audit'") == 1


def test_without_the_function_the_roles_lifted_fence_stays_open(dbs: Dbs) -> None:
    fence_now(dbs.source, [AUTH], "auth", fence.HARD)
    with psycopg.connect(dbs.source, autocommit=True) as admin:
        admin.execute("DROP FUNCTION splitter.drop_fence_trigger(regclass, name)")
    with psycopg.connect(dbs.splitter(dbs.source), autocommit=True) as conn:
        with conn.transaction():
            fence.unfence_tables(conn, USERS, "auth")
        assert fence.sweep(conn, USERS, "auth"), "nothing to retry: only the owner could drop it"
        assert _triggers(conn) == [(fence.trigger_name("auth"),)]
        assert fence.fences(conn, USERS) == []
    assert dbs.run(dbs.source, "UPDATE users SET password = 'new' WHERE id = 'u1'") is None
    assert dbs.run(dbs.source, INSERT) is None


def test_fence_replace_and_lift_take_share_row_exclusive_only(dbs: Dbs) -> None:
    """The drain argument: creating, turning soft into hard (other events) and lifting all wait behind
    writers (SHARE ROW EXCLUSIVE) and never block readers (no ACCESS EXCLUSIVE)."""
    lock_modes = ("SELECT array_agg(DISTINCT mode ORDER BY mode) FROM pg_locks "
                  "WHERE relation = 'public.users'::regclass AND pid = pg_backend_pid()")
    steps: list[Callable[[psycopg.Connection], None]] = [
        lambda c: fence.fence_tables(c, [FenceSpec("public", "users", "m", "auth", ("password",), False)],
                                     "auth", fence.SOFT, HINT),
        lambda c: fence.fence_tables(c, [AUTH], "auth", fence.HARD, HINT),
        lambda c: fence.unfence_tables(c, USERS, "auth"),
    ]
    with psycopg.connect(dbs.splitter(dbs.source), autocommit=True) as conn:
        for step in steps:
            with conn.transaction():
                step(conn)
                row = conn.execute(lock_modes.encode()).fetchone()
                assert row is not None and "ShareRowExclusiveLock" in row[0]
                assert set(row[0]) <= {"AccessShareLock", "ShareRowExclusiveLock"}, row[0]


def test_topology_source_fences_of_auth_and_user(dbs: Dbs) -> None:
    """The specs the cutover builds from topology.py: each service's fence stops what it owns."""
    from splitter.ops.cutover import fence_specs  # the ops floor; the tests above need only connectors

    topology = load_topology(str(ROOT / "topology.py"))
    auth, user = fence_specs.source_fence(topology, "auth"), fence_specs.source_fence(topology, "user")
    assert [(s.table, s.rows) for s in auth + user] == [("users", True), ("users", False)]
    fence_now(dbs.source, auth, "auth", fence.HARD)
    fence_now(dbs.source, user, "user", fence.HARD)
    refused(dbs.run(dbs.source, "UPDATE users SET password = 'new' WHERE id = 'u1'"), "auth_db")
    refused(dbs.run(dbs.source, INSERT), "auth_db")
    refused(dbs.run(dbs.source, "UPDATE users SET bio = 'hello' WHERE id = 'u1'"), "user_db")
    with psycopg.connect(dbs.splitter(dbs.source), autocommit=True) as conn, conn.transaction():
        fence.unfence_tables(conn, USERS, "user")
    assert dbs.run(dbs.source, "UPDATE users SET bio = 'hello' WHERE id = 'u1'") is None


def test_status_shows_each_services_fences(dbs: Dbs) -> None:
    from splitter.ops.cutover import view
    from splitter.pipeline.config import build_settings

    fence_now(dbs.source, [AUTH], "auth", fence.HARD)
    fence_now(dbs.source, [USER], "user", fence.SOFT)  # nobody holds user's lock: stale, writes pass
    settings = build_settings(topology_path=str(ROOT / "topology.py"), source_dsn=dbs.splitter(dbs.source),
                              kafka="127.0.0.1:9", env={})
    rows = {r.service: r for r in view.status(settings)}
    assert (rows["auth"].fenced, rows["user"].fenced, rows["post"].fenced) == (fence.HARD, view.STALE, "no")
    [auth] = rows["auth"].fences
    assert (auth.table, auth.columns, auth.rows) == ("public.users", AUTH_COLUMNS, True)
    assert auth.stops() == f"inserts, deletes; updates of {', '.join(AUTH_COLUMNS)}"
    assert rows["user"].to_dict()["fences"] == [
        {"table": "public.users", "mode": view.STALE, "columns": list(PROFILE_COLUMNS), "rows": False}]
    text = view.render_status(list(rows.values()))
    assert "source fences:" in text and f"updates of {', '.join(PROFILE_COLUMNS)}" in text
